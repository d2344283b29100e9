"""The Trainer's console output for one stage: a progress bar named after the stage on a terminal,
plain progress lines when piped, and the toolkit's formatted log lines (``iml_hf.utils.console``)."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm
from transformers import ProgressCallback, TrainerControl, TrainerState, TrainingArguments

from iml_hf.utils.console import (
    PLAIN_EVERY_S,
    duration,
    interactive,
    is_verbose,
    number,
    pace,
    say,
    training_line,
    where,
)


class ConsoleCallback(ProgressCallback):
    """transformers' ``ProgressCallback`` with the stage's name on the bar and formatted log lines;
    without a terminal (or with ``disable_tqdm``) plain progress lines instead of a bar. Prints
    the stage banner at ``on_train_begin``; measurement lines come from ``IntervalCallback.emit``."""

    training_bar: tqdm | None  # type: ignore[assignment]  # ProgressCallback's is unannotated, read as None

    def __init__(self, stage: str, banner: Any = None, plain_every_s: float = PLAIN_EVERY_S):
        super().__init__()
        self.stage = stage
        self.banner = banner  # callable(state) -> str, or None
        self.plain_every_s = plain_every_s
        self.started = 0.0
        self.first_step = 0
        self.next_plain = 0.0

    def rate(self, state: TrainerState) -> float | None:
        """Steps per second since this process started the stage (measurements included)."""
        elapsed = time.perf_counter() - self.started
        done = state.global_step - self.first_step
        return done / elapsed if done > 0 and elapsed > 0 else None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.current_step = self.first_step = state.global_step
        self.started = time.perf_counter()
        self.next_plain = self.started + self.plain_every_s
        if not (state.is_world_process_zero and is_verbose()):
            return
        if self.banner is not None:
            say(self.banner(state))
        if interactive() and not args.disable_tqdm:
            self.training_bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=self.stage, unit="step", dynamic_ncols=True
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
            self.current_step = state.global_step
        elif time.perf_counter() >= self.next_plain and state.is_world_process_zero and is_verbose():
            self.next_plain = time.perf_counter() + self.plain_every_s
            say(
                f"{where(self.stage, state.global_step, state.max_steps)} {'progress':<10}  "
                f"{pace(state.global_step, state.max_steps, self.rate(state))}"
            )

    def on_prediction_step(self, *args: Any, **kwargs: Any) -> None:
        if self.training_bar is not None:
            super().on_prediction_step(*args, **kwargs)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if not (state.is_world_process_zero and is_verbose()):
            return
        if "loss" in logs:
            self.next_plain = time.perf_counter() + self.plain_every_s
            say(training_line(self.stage, state.global_step, state.max_steps, logs, self.rate(state)))
            if self.training_bar is not None:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
        elif "train_runtime" in logs:
            steps = state.global_step - self.first_step
            runtime = logs["train_runtime"]
            resumed = f" (resumed at step {self.first_step:,})" if self.first_step else ""
            say(
                f"[{self.stage} done] {steps:,} steps in {duration(runtime)}{resumed} "
                f"({steps / max(runtime, 1e-9):.1f} steps/s), mean training loss {number(logs.get('train_loss'))}"
            )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None


def use_console(trainer: Any, banner: Any = None) -> ConsoleCallback:
    """Replace the Trainer's printing callback (``PrinterCallback`` or ``ProgressCallback``) by a
    ``ConsoleCallback`` for its stage."""
    from transformers import PrinterCallback

    for plain in (PrinterCallback, ProgressCallback):
        trainer.pop_callback(plain)
    console = ConsoleCallback(getattr(trainer, "stage_name", "train"), banner)
    trainer.add_callback(console)
    return console
