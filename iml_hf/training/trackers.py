"""Trackers (``report_to`` wandb / tensorboard) over a multi-stage run: one run, one step axis.

Every stage is its own ``IMLTrainer``, and the stock ``WandbCallback``/``TensorBoardCallback`` would
count ``state.global_step`` (which restarts each stage), rename keys (``rewrite_logs`` adds
``train/``) and, for TensorBoard, open a timestamped folder per stage. ``IMLTrainer`` swaps them for
the stage-aware subclasses below, which share one ``TrackerRun`` (one wandb run, one TensorBoard
writer in ``<output_dir>/tensorboard``), log at ``step_offset + global_step`` and keep measurement
names (``<family>/<subset>/<metric>``, as in metrics.jsonl) unchanged. The pipeline calls
``TrackerRun.finish`` after the last stage.

A killed run rerun with the same command continues both: TensorBoard appends to the same folder
with ``purge_step`` just past the step training resumes from (TensorBoard then hides what the
killed run had logged after that step, so no step is shown twice), and wandb resumes the run whose
id ``trackers.json`` in the run folder recorded (``wandb.init(id=..., resume="allow")``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.integrations import TensorBoardCallback, WandbCallback, rewrite_logs
from transformers.utils import logging

from iml_hf.config.run_names import recipe_stem, run_name
from iml_hf.utils.io import write_json_atomic

if TYPE_CHECKING:
    from iml_hf.config import Recipe

logger = logging.get_logger(__name__)

#: Trainer log keys the stock WandbCallback keeps in the run summary instead of the history.
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
#: wandb limits a tag to 64 characters.
MAX_TAG_LENGTH = 64
#: The file in the run folder that records the wandb run's id, so that a resumed run continues it.
TRACKER_IDS = "trackers.json"


def tracker_names(logs: dict[str, Any]) -> dict[str, Any]:
    """Tracker keys for Trainer logs: a measurement name (it has a ``/``) stays as it is, so it
    equals the metrics.jsonl ``name``; the Trainer's own keys get the stock ``train/``/``eval/`` prefix."""
    named = {key: value for key, value in logs.items() if "/" in key}
    return {**rewrite_logs({k: v for k, v in logs.items() if "/" not in k}), **named}


def run_group(recipe: Recipe) -> str:
    """``tracker_group`` (a sweep sets its name there), else the recipe stem: the runs to compare together."""
    return recipe.run.tracker_group or recipe_stem(recipe)


def run_tags(recipe: Recipe) -> list[str]:
    """Task name, model (checkpoint name, or architecture for a model built from scratch), recipe stem, ``seed<N>``."""
    checkpoint = recipe.model.model_name_or_path
    if checkpoint and checkpoint.startswith((".", "/", "~")):  # a local folder: its name, not the path
        checkpoint = Path(checkpoint).name
    tags = [recipe.task.name, checkpoint or recipe.model.architecture, recipe_stem(recipe), f"seed{recipe.run.seed}"]
    return list(dict.fromkeys(str(tag)[:MAX_TAG_LENGTH] for tag in tags))


@dataclass
class TrackerRun:
    """What all stages of one run share with the trackers: its name, group and tags, the
    TensorBoard folder and writer, and the wandb run it started (both closed by ``finish``).
    ``wandb_dir`` is the run folder: wandb writes under it, and ``trackers.json`` there keeps the
    wandb run's id for a rerun. ``purge_step`` is set when the writer continues a killed run's log."""

    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_dir: str | None = None
    wandb_dir: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    writer: Any = None
    wandb_run: Any = None
    purge_step: int | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> TrackerRun:
        """Name, group and tags from the recipe; TensorBoard in ``<output_dir>/tensorboard`` and wandb's
        files in ``<output_dir>/wandb`` unless ``TENSORBOARD_LOGGING_DIR``/``WANDB_DIR`` say otherwise."""
        out = Path(recipe.run.output_dir)
        return cls(
            run_name(recipe),
            run_group(recipe),
            run_tags(recipe),
            str(out / "tensorboard"),
            str(out),
            {"recipe": recipe.resolved},
        )

    def tensorboard_writer(self, factory: Callable[..., Any], args: TrainingArguments, start_step: int = 0) -> Any:
        """The run's one SummaryWriter, opened on first use at ``start_step`` (the step over all
        stages this process starts training from). A run started from step 0 empties its own folder
        (like metrics.jsonl); a resumed run appends to it with ``purge_step`` one past
        ``start_step``, which hides the killed run's events after the checkpoint it resumes from
        (the ones up to it stay, as metrics.jsonl keeps its rows). A ``TENSORBOARD_LOGGING_DIR``
        set by the user is only appended to (it may hold other runs)."""
        if self.writer is None:
            chosen = os.getenv("TENSORBOARD_LOGGING_DIR")
            log_dir = (
                os.path.expanduser(chosen) if chosen else self.log_dir or str(Path(args.output_dir) / "tensorboard")  # type: ignore[arg-type]  # never None: TrainingArguments.__post_init__ defaults it
            )
            resumed = not chosen and start_step > 0 and any(Path(log_dir).glob("events.out.tfevents.*"))
            if not chosen and not resumed:
                shutil.rmtree(log_dir, ignore_errors=True)
            self.purge_step = start_step + 1 if resumed else None
            self.writer = factory(log_dir=log_dir, **({"purge_step": self.purge_step} if resumed else {}))
            if not resumed:
                self.writer.add_text("run/name", str(self.name or args.run_name))
                self.writer.add_text("run/group", str(self.group))
                self.writer.add_text("run/tags", ", ".join(self.tags))
        return self.writer

    def logs_at(self, step: int) -> bool:
        """Whether a one-off event (a stage's arguments) at ``step`` is still to be written: not
        when the killed run wrote it and the resumed writer keeps it (a step before ``purge_step``)."""
        return self.purge_step is None or step >= self.purge_step

    def saved_wandb_id(self) -> str | None:
        """The wandb run id a killed run recorded in ``trackers.json`` (None for a new run)."""
        if not self.wandb_dir:
            return None
        try:
            return json.loads((Path(self.wandb_dir) / TRACKER_IDS).read_text()).get("wandb_run_id")
        except (OSError, ValueError, AttributeError):
            return None

    def start_wandb(self, wandb: Any, args: TrainingArguments) -> None:
        """Start the run's wandb run once, with its name, group, tags and recipe (``WANDB_PROJECT``,
        ``WANDB_RUN_GROUP``, ``WANDB_TAGS``, ``WANDB_DIR``, ``WANDB_RUN_ID`` win when set), resuming
        the one ``trackers.json`` names; a run already made by the user is used as it is."""
        if self.wandb_run is not None or wandb.run is not None:
            return
        kwargs: dict[str, Any] = {
            "project": os.getenv("WANDB_PROJECT", "iml_hf"),
            "name": args.run_name or self.name,
            "config": self.config,
        }
        if not os.getenv("WANDB_RUN_GROUP") and self.group:
            kwargs["group"] = self.group
        if not os.getenv("WANDB_TAGS") and self.tags:
            kwargs["tags"] = self.tags
        if not os.getenv("WANDB_DIR") and self.wandb_dir:
            Path(self.wandb_dir).mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = self.wandb_dir
        previous = None if os.getenv("WANDB_RUN_ID") else self.saved_wandb_id()
        if previous:  # a rerun of a killed run: the same wandb run continues
            kwargs.update(id=previous, resume="allow")
        self.wandb_run = wandb.init(**kwargs)
        if self.wandb_dir and self.wandb_run is not None and getattr(self.wandb_run, "id", None):
            write_json_atomic(Path(self.wandb_dir) / TRACKER_IDS, {"wandb_run_id": self.wandb_run.id})

    def finish(self) -> None:
        """Close the TensorBoard writer and finish the wandb run this run started (after the last stage)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


class StageWandbCallback(WandbCallback):
    """``WandbCallback`` for one stage: the run's one wandb run, ``train/global_step`` counted over
    all stages, measurement names unchanged; it does not finish the run (``TrackerRun.finish`` does)."""

    def __init__(self, run: TrackerRun, step_offset: int = 0):
        super().__init__()
        self.run = run
        self.step_offset = step_offset

    def setup(self, args: TrainingArguments, state: TrainerState, model: Any, **kwargs: Any) -> None:
        if self._wandb is not None and state.is_world_process_zero:
            self.run.start_wandb(self._wandb, args)
        super().setup(args, state, model, **kwargs)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._wandb is None:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        for key in SUMMARY_KEYS:
            if key in logs:
                self._wandb.run.summary[key] = logs.pop(key)
        self._wandb.log({**tracker_names(logs), "train/global_step": self.step_offset + state.global_step})


class StageTensorBoardCallback(TensorBoardCallback):
    """``TensorBoardCallback`` for one stage: the run's one writer and folder, scalars at the step
    counted over all stages, measurement names unchanged; it flushes but leaves the writer open."""

    def __init__(self, run: TrackerRun, stage_name: str = "train", step_offset: int = 0):
        super().__init__()
        self.run = run
        self.stage_name = stage_name
        self.step_offset = step_offset

    def _init_summary_writer(self, args: TrainingArguments, state: TrainerState | None = None) -> None:
        start = self.step_offset + (state.global_step if state is not None else 0)  # > 0: a resumed run
        self.tb_writer = self.run.tensorboard_writer(self._SummaryWriter, args, start)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args, state)
        if self.run.logs_at(self.step_offset) and state.global_step == 0:  # once per stage, also across a resume
            self.tb_writer.add_text(f"args/{self.stage_name}", args.to_json_string(), self.step_offset)
        config = getattr(kwargs.get("model"), "config", None)
        if config is not None and self.step_offset == 0 and state.global_step == 0 and self.run.logs_at(0):
            self.tb_writer.add_text("model_config", config.to_json_string())

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args, state)
        step = self.step_offset + state.global_step
        for key, value in tracker_names(logs or {}).items():
            if isinstance(value, (int, float)):
                self.tb_writer.add_scalar(key, value, step)
            elif isinstance(value, str):
                self.tb_writer.add_text(key, value, step)
            else:
                logger.warning(f"TensorBoard: dropped {key!r}, a {type(value).__name__} and not a number or text")
        self.tb_writer.flush()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.tb_writer is not None:
            self.tb_writer.flush()


def use_stage_trackers(trainer: Trainer, run: TrackerRun, stage_name: str, step_offset: int) -> None:
    """Swap the Trainer's stock wandb/TensorBoard callbacks (from ``report_to``) for the stage-aware
    ones sharing ``run``, and name the run (``args.run_name``) unless the recipe did."""
    if trainer.args.run_name is None:
        trainer.args.run_name = run.name
    swaps = {
        WandbCallback: lambda: StageWandbCallback(run, step_offset),
        TensorBoardCallback: lambda: StageTensorBoardCallback(run, stage_name, step_offset),
    }
    for stock, stage_aware in swaps.items():
        if trainer.pop_callback(stock) is not None:
            trainer.add_callback(stage_aware())
