"""IMLTrainer: a Trainer that knows which stage of a multi-stage schedule it runs.

It overrides public methods only: ``log`` adds the stage index and the step counted over all
stages (so trackers see one monotone axis), and ``create_optimizer`` can continue the previous
stage's optimizer (its moments) at this stage's learning rate and weight decay. The stock wandb
and TensorBoard callbacks are swapped for stage-aware ones sharing the run's ``TrackerRun``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from iml_hf.trackers import TrackerRun, use_stage_trackers


class LogAtStageEnd(TrainerCallback):
    """Logs the training loss at a stage's last step: the Trainer averages the loss over processes
    only when it logs, so without this the steps after the last logging step would enter
    ``train_loss`` with the main process's own share of the loss alone."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_log = True


class IMLTrainer(Trainer):
    """``Trainer`` for one named stage; ``step_offset`` is the number of steps of earlier stages,
    ``tracker_run`` what the trackers of all stages share (a one-stage run of its own by default)."""

    def __init__(
        self,
        *args: Any,
        stage_name: str = "train",
        stage_index: int = 0,
        step_offset: int = 0,
        carried_optimizer: torch.optim.Optimizer | None = None,
        tracker_run: TrackerRun | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.stage_name = stage_name
        self.stage_index = stage_index
        self.step_offset = step_offset
        self.carried_optimizer = carried_optimizer
        self.add_callback(LogAtStageEnd())
        self.tracker_run = tracker_run or TrackerRun(name=self.args.run_name)
        use_stage_trackers(self, self.tracker_run, stage_name, step_offset)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.carried_optimizer is None:
            return super().create_optimizer(model)
        optimizer = getattr(self.carried_optimizer, "optimizer", self.carried_optimizer)
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

    def unwrapped_optimizer(self) -> torch.optim.Optimizer | None:
        """The plain torch optimizer (without accelerate's wrapper), to hand to the next stage."""
        return getattr(self.optimizer, "optimizer", self.optimizer)
