"""Exact match on every held-out subset at a step interval and at the end of each stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import TrainerState

from iml_hf.callbacks.interval import IntervalCallback
from iml_hf.exact_match import exact_match

if TYPE_CHECKING:
    from iml_hf.callbacks import MetricsLog
    from iml_hf.trainer import IMLTrainer


class SubsetEMCallback(IntervalCallback):
    """Logs ``eval/<subset>/em`` through ``trainer.log`` (so every ``report_to`` tracker gets it)
    and appends (stage, global step, epoch, subset, EM) rows to ``metrics.jsonl``.

    ``every_steps`` = 0 measures only at the end of the stage; ``latest`` holds the last scores.
    """

    def __init__(
        self,
        trainer: IMLTrainer,
        eval_sets: dict[str, Dataset],
        metrics_log: MetricsLog,
        every_steps: int = 0,
        batch_size: int = 1024,
    ):
        super().__init__(trainer, metrics_log, every_steps, "steps")
        self.sets = {
            name: (list(data["prompt_ids"]), list(data["answer_ids"])) for name, data in eval_sets.items()
        }
        self.batch_size = batch_size
        self.latest: dict[str, float] = {}

    def measure(self, state: TrainerState) -> dict[str, float]:
        """Score every subset; under several processes each scores a shard and the counts are summed."""
        tokenizer = self.trainer.processing_class
        processes = PartialState()
        scores = {}
        for name, (prompts, answers) in self.sets.items():
            with processes.split_between_processes(list(range(len(prompts)))) as shard:
                correct = exact_match(
                    self.trainer.model,
                    [prompts[i] for i in shard],
                    [answers[i] for i in shard],
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    batch_size=self.batch_size,
                )
            counts = gather_object([(sum(correct), len(correct))])
            scores[name] = sum(c for c, _ in counts) / max(sum(n for _, n in counts), 1)
        self.trainer.log({f"eval/{name}/em": em for name, em in scores.items()})
        position = self.trainer.position(state)
        self.metrics_log.write(
            [{**position, "subset": name, "metric": "em", "value": em} for name, em in scores.items()]
        )
        self.latest = scores
        return scores
