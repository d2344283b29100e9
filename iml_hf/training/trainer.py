"""IMLTrainer: a Trainer that knows which stage of a multi-stage schedule it runs.

It overrides public methods only: ``log`` adds the stage index and the step counted over all
stages (so trackers see one monotone axis), and ``create_optimizer`` can continue the previous
stage's optimizer (its moments) at this stage's learning rate and weight decay. The stock wandb
and TensorBoard callbacks are swapped for stage-aware ones sharing the run's ``TrackerRun``. ``ResumableCheckpoints`` is the one place that
reads and sets private Trainer attributes (its running loss sum and the step training started
from), so that a stage resumed from a checkpoint reports the same ``train_loss``. ``TrainingRows`` appends the logged training
loss, gradient norm and learning rate to ``metrics.jsonl``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import SaveStrategy

from iml_hf.training.trackers import TrackerRun, use_stage_trackers
from iml_hf.utils.io import MetricsLog, write_json_atomic

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Written into a checkpoint folder once all of it is on disk (iml_hf.training.run_folder reads it).
CHECKPOINT_MARKER = "resume.json"


def make_resumable(args: TrainingArguments, checkpoint_steps: int) -> None:
    """Checkpoint every ``checkpoint_steps`` steps (0: never) into ``args.output_dir``; the
    Trainer keeps them all and ``ResumableCheckpoints`` deletes the older ones once a newer one
    is complete, so a kill while saving never leaves no checkpoint."""
    if checkpoint_steps:
        args.save_strategy = SaveStrategy.STEPS
        args.save_steps = checkpoint_steps
        args.save_total_limit = None
        args.save_only_model = False


class ResumableCheckpoints(TrainerCallback):
    """Makes a checkpoint enough to continue a stage as if it never stopped.

    At a checkpoint step the loss is logged first (so the Trainer's running loss sum is complete
    when saved); once the Trainer has saved, the main process writes the marker with that sum,
    the measurement callbacks' seconds and the stage's elapsed seconds, then deletes older
    checkpoints. Resumed from a checkpoint, ``on_train_begin`` puts the sum and the seconds back
    and counts the loss average over the whole stage, as an uninterrupted run does."""

    def __init__(self, trainer: IMLTrainer, resumed: dict[str, Any] | None = None):
        self.trainer = trainer
        self.resumed = resumed or {}
        self.started = time.perf_counter()

    def measuring(self) -> dict[str, Any]:
        return {type(cb).__name__: cb for cb in self.trainer.callback_handler.callbacks if hasattr(cb, "measure")}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.started = time.perf_counter() - self.resumed.get("stage_seconds", 0.0)
        if self.resumed:
            self.trainer._total_loss_scalar = self.resumed["total_loss"]
            self.trainer._initial_global_step = 0  # train_loss: the sum over the stage / all its steps
            for name, callback in self.measuring().items():
                callback.seconds = self.resumed["seconds"].get(name, 0.0)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if args.save_strategy == SaveStrategy.STEPS and args.save_steps and state.global_step % args.save_steps == 0:
            control.should_log = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"  # type: ignore[arg-type]  # never None: TrainingArguments.__post_init__ defaults it
        write_json_atomic(
            folder / CHECKPOINT_MARKER,
            {
                "step": state.global_step,
                "total_loss": self.trainer._total_loss_scalar,
                "seconds": {name: cb.seconds for name, cb in self.measuring().items()},
                "stage_seconds": self.elapsed(),
            },
        )
        for older in Path(args.output_dir).glob("checkpoint-*"):  # type: ignore[arg-type]  # never None: TrainingArguments.__post_init__ defaults it
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)


class LogAtStageEnd(TrainerCallback):
    """Logs the training loss at a stage's last step: the Trainer averages the loss over processes
    only when it logs, so without this the steps after the last logging step would enter
    ``train_loss`` with the main process's own share of the loss alone."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_log = True


class TrainingRows(TrainerCallback):
    """Appends the Trainer's logged training loss, gradient norm and learning rate to
    ``metrics.jsonl`` (``family`` ``train``, ``subset`` ``train``), so the loss curve survives
    without a tracker; the rows carry the same position keys as the measurements' rows."""

    KEYS = ("loss", "grad_norm", "learning_rate")

    def __init__(self, trainer: IMLTrainer, metrics_log: MetricsLog):
        self.trainer = trainer
        self.metrics_log = metrics_log

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return
        position = self.trainer.position(state)
        self.metrics_log.write(
            [
                {
                    **position,
                    "name": f"train/{key}",
                    "family": "train",
                    "subset": "train",
                    "metric": key,
                    "value": float(logs[key]),
                }
                for key in self.KEYS
                if isinstance(logs.get(key), (int, float))
            ]
        )


class IMLTrainer(Trainer):
    """``Trainer`` for one named stage; ``step_offset`` is the number of steps of earlier stages,
    ``tracker_run`` what the trackers of all stages share (a one-stage run of its own by default)."""

    # What every stage hands it (iml_hf.training.stages), narrower than the Trainer's own annotations
    # (any module, any processor, any dataset, or None).
    model: PreTrainedModel
    processing_class: PreTrainedTokenizerBase
    train_dataset: Dataset

    def __init__(
        self,
        *args: Any,
        stage_name: str = "train",
        stage_index: int = 0,
        step_offset: int = 0,
        carried_optimizer: torch.optim.Optimizer | None = None,
        carried_optimizer_state: dict[str, Any] | None = None,
        tracker_run: TrackerRun | None = None,
        resumed: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.stage_name = stage_name
        self.stage_index = stage_index
        self.step_offset = step_offset
        self.carried_optimizer = carried_optimizer
        self.carried_optimizer_state = carried_optimizer_state
        self.add_callback(LogAtStageEnd())
        self.resumable = ResumableCheckpoints(self, resumed)
        self.add_callback(self.resumable)
        self.tracker_run = tracker_run or TrackerRun(name=self.args.run_name)
        use_stage_trackers(self, self.tracker_run, stage_name, step_offset)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.carried_optimizer is not None:
            optimizer = getattr(self.carried_optimizer, "optimizer", self.carried_optimizer)
        elif self.carried_optimizer_state is not None:
            # resumed at this stage's start: the previous stage's optimizer, as saved at its end
            optimizer = super().create_optimizer(model)
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.load_state_dict(self.carried_optimizer_state)
        else:
            return super().create_optimizer(model)
        decayed = {id(p) for n, p in self.model.named_parameters() if n in self.get_decay_parameter_names(self.model)}
        for group in optimizer.param_groups:  # this stage's lr schedule and weight decay, kept moments
            group["lr"] = group["initial_lr"] = self.args.learning_rate
            group["weight_decay"] = self.args.weight_decay if id(group["params"][0]) in decayed else 0.0
        self.optimizer = optimizer
        return optimizer

    def position(self, state: TrainerState | None = None) -> dict[str, Any]:
        """Where training is: stage, step within the stage, step over all stages, epoch."""
        state = state or self.state
        return {
            "stage": self.stage_name,
            "stage_index": self.stage_index,
            "stage_step": state.global_step,
            "global_step": self.step_offset + state.global_step,
            "epoch": state.epoch,
        }

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs = {**logs, "stage_index": float(self.stage_index)}
        logs["total_step"] = float(self.step_offset + self.state.global_step)
        super().log(logs, start_time)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """A tied weight (GPT-2's ``lm_head.weight``) is not missing from a checkpoint: it is saved
        once, under the weight it is tied to, and loading that one loads both. transformers 5's check
        reads the old ``_keys_to_ignore_on_save`` (empty now), so it warned on every resume of a tied model."""
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
            load_result = load_result._replace(missing_keys=missing)
        super()._issue_warnings_after_load(load_result)

    def unwrapped_optimizer(self) -> torch.optim.Optimizer | None:
        """The plain torch optimizer (without accelerate's wrapper), to hand to the next stage."""
        return getattr(self.optimizer, "optimizer", self.optimizer)
