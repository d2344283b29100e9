"""Base for callbacks that measure every N steps or epochs of a stage and at the stage's end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import PartialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from iml_hf.utils import console

if TYPE_CHECKING:
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog


class IntervalCallback(TrainerCallback):
    """Calls ``measure(state)`` every ``interval`` steps (``strategy="steps"``) or epochs
    (``"epoch"``), and once at the end of training; ``interval=0`` means only at the end.

    With ``main_process_only`` the other processes skip the measurement (it must then need no
    collective communication).
    """

    main_process_only = False
    #: How the console names the measurement (the stage banner, a stage-end analysis's start line).
    label = "measurement"
    #: Seconds spent measuring so far (the cost of the measurement, reported in results.json).
    seconds = 0.0
    #: When the measurement running now started (its console line shows the seconds it took).
    measuring_since = 0.0

    def __init__(self, trainer: IMLTrainer, metrics_log: MetricsLog, interval: int = 0, strategy: str = "steps"):
        self.trainer = trainer
        self.metrics_log = metrics_log
        self.interval = interval
        self.strategy = strategy

    def measure(self, state: TrainerState) -> object:
        """Measure and ``emit``; what it returns (the EM callback's scores) is for direct callers only."""
        raise NotImplementedError

    def emit(self, state: TrainerState, family: str, entries: list[tuple[str, str, float, dict[str, Any]]]) -> None:
        """The one path every measurement reports through: each ``(subset, metric, value, extras)``
        goes to the trackers (``Trainer.log``) as ``<family>/<subset>/<metric>`` (numeric extras as
        ``..._<extra>``) and to metrics.jsonl as a row with that ``name``, the position in
        training and the extras, so both carry the same names; the console gets one line."""
        logs: dict[str, float] = {}
        rows = []
        position = self.trainer.position(state)
        for subset, metric, value, extras in entries:
            name = f"{family}/{subset}/{metric}"
            logs[name] = value
            logs.update({f"{name}_{k}": v for k, v in extras.items() if isinstance(v, (int, float))})
            rows.append(
                {
                    **position,
                    "name": name,
                    "family": family,
                    "subset": subset,
                    "metric": metric,
                    "value": value,
                    **extras,
                }
            )
        control = getattr(self.trainer, "control", None)
        keep = getattr(control, "should_log", False)  # Trainer.log clears it: the loss due at this step is still logged
        self.trainer.log(logs)
        if control is not None:
            control.should_log = keep
        self.metrics_log.write(rows)
        if state.is_world_process_zero and console.is_verbose():
            line = console.measurement_line(
                position["stage"],
                state.global_step,
                state.max_steps,
                family,
                entries,
                time.perf_counter() - self.measuring_since,
            )
            if line:
                console.say(line)

    def _maybe_measure(self, state: TrainerState) -> None:
        if not self.main_process_only or PartialState().is_main_process:
            self.measuring_since = start = time.perf_counter()
            self.measure(state)
            self.seconds += time.perf_counter() - start

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        step = state.global_step
        if self.strategy == "steps" and self.interval and step % self.interval == 0 and step < state.max_steps:
            self._maybe_measure(state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        epoch = round(state.epoch or 0)
        if (
            self.strategy == "epoch"
            and self.interval
            and epoch % self.interval == 0
            and state.global_step < state.max_steps
        ):
            self._maybe_measure(state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._maybe_measure(state)


class StageEndCallback(IntervalCallback):
    """A main-process measurement at the end of every stage that reads ``inputs`` prepared once
    for all stages and writes its files into ``<output_dir>/<folder_name>/<index>-<stage>``."""

    main_process_only = True
    folder_name = "measurement"

    def __init__(self, trainer: IMLTrainer, inputs: Any, metrics_log: MetricsLog, output_dir: str | Path, args: Any):
        super().__init__(trainer, metrics_log, interval=0)
        self.inputs = inputs
        self.folder = Path(output_dir) / self.folder_name
        self.args = args
        self.latest: dict[str, Any] = {}

    def _maybe_measure(self, state: TrainerState) -> None:
        if PartialState().is_main_process:
            console.say(f"[{getattr(self.trainer, 'stage_name', 'stage')} end] {self.label} ...")
        super()._maybe_measure(state)

    def stage_folder(self, state: TrainerState) -> tuple[dict[str, Any], Path]:
        """This stage's position and the folder its files go to."""
        position = self.trainer.position(state)
        return position, self.folder / f"{position['stage_index']}-{position['stage']}"
