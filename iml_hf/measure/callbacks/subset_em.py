"""Exact match (and, for text answers, F1) plus answer loss on every evaluation set, at a step
interval and at the end of each stage.

Two ways to score an answer, chosen by the task (``answer_match``): ``tokens`` (the toy task: the
greedy continuation starts with the answer's tokens) and ``text`` (entity QA: batched greedy
generation, then SQuAD-normalised EM and token F1 through the ``evaluate`` module shipped in
``iml_hf/measure/metrics/qa_match``; any ``;``-separated answer counts). The loss is the teacher-forced
mean cross-entropy of each example's answer tokens (and EOS), averaged over the set's examples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import TrainerState

from iml_hf.data.collators import PadCollator
from iml_hf.measure.callbacks.interval import IntervalCallback
from iml_hf.measure.exact_match import greedy_answers
from iml_hf.measure.gradients import per_example_loss
from iml_hf.utils import console
from iml_hf.utils.io import write_atomic

if TYPE_CHECKING:
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog


@torch.no_grad()
def answer_losses(
    model, input_ids: list[list[int]], labels: list[list[int]], pad_id: int, batch_size: int
) -> list[float]:
    """Each example's mean cross-entropy over its labelled tokens (``gradients.per_example_loss``,
    the loss the alignment measures), in eval mode, restored afterwards."""
    was_training = model.training
    model.eval()
    collate = PadCollator(pad_id)
    losses: list[float] = []
    try:
        for start in range(0, len(input_ids), batch_size):
            batch = collate(
                [
                    {"input_ids": ids, "labels": targets}
                    for ids, targets in zip(input_ids[start : start + batch_size], labels[start : start + batch_size])
                ]
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses.extend(per_example_loss(logits, batch["labels"]).tolist())
    finally:
        model.train(was_training)
    return losses


def padded_shard(size: int, rank: int, processes: int) -> tuple[list[int], int]:
    """This process's contiguous share of ``size`` examples, padded with example 0 to the same
    length on every process (so that all make the same model calls, as sharded parameters need),
    and how many of them are its own."""
    per = -(-size // processes)
    own = list(range(min(size, rank * per), min(size, (rank + 1) * per)))
    return own + [0] * (per - len(own)), len(own)


class SubsetEMCallback(IntervalCallback):
    """Logs ``eval/<set>/em`` (and ``f1``, ``loss``) through ``trainer.log`` (so every ``report_to``
    tracker gets it) and appends (stage, global step, epoch, set, metric, value) rows to
    ``metrics.jsonl``. ``every_steps`` = 0 measures only at the end of the stage; ``latest`` holds
    the last EM per set, ``latest_metrics`` every metric and ``sizes`` the examples per set. With
    ``samples`` the stage-end evaluation also keeps one row per example (``samples``: set, prompt,
    gold answer, the greedy prediction EM judged, match), from the generation EM already made."""

    label = "exact match"

    def __init__(
        self,
        trainer: IMLTrainer,
        eval_sets: dict[str, Dataset],
        metrics_log: MetricsLog,
        every_steps: int = 0,
        batch_size: int = 1024,
        answer_match: str = "tokens",
        loss: bool = True,
        at_start: bool = False,
        samples: bool = True,
    ):
        super().__init__(trainer, metrics_log, every_steps, "steps")
        self.at_start = at_start
        self.start: dict[str, float] = {}  # EM per set at the stage's step 0 (``at_start``)
        columns = (
            ["prompt_ids", "answer_ids"]
            + (["answer"] if answer_match == "text" else [])
            + (["input_ids", "labels"] if loss else [])
        )
        texts = [c for c in ("prompt", "answer") if samples and c not in columns]  # strings, for samples only
        self.sets = {
            name: {c: list(data[c]) for c in columns + [t for t in texts if t in data.column_names]}
            for name, data in eval_sets.items()
        }
        self.sizes = {name: len(data["prompt_ids"]) for name, data in self.sets.items()}
        self.batch_size = batch_size
        self.answer_match = answer_match
        self.loss = loss
        self.latest: dict[str, float] = {}
        self.latest_metrics: dict[str, dict[str, float]] = {}
        self.keep_samples = samples
        self.collecting = False  # True during the stage-end evaluation when keeping samples
        self.samples: list[dict[str, Any]] = []  # the rows of the last stage-end evaluation

    def _scores(self, data: dict[str, list], shard: list[int]) -> tuple[dict[str, list[float]], list[Any]]:
        """Per-example scores of the examples ``shard`` of one set, and the greedy predictions they
        judged (answer strings for ``text``, token ids for ``tokens``)."""
        tokenizer = self.trainer.processing_class
        model = self.trainer.model
        prompts = [data["prompt_ids"][i] for i in shard]
        scores: dict[str, list[float]] = {}
        predictions: list[str] | list[list[int]]
        if self.answer_match == "text":
            from iml_hf.measure.qa_match import generate_answers, score_answers

            # the whole set's longest answer, not the shard's: a prediction must not depend on the sharding
            longest = max((len(a) for a in data["answer_ids"]), default=1)
            predictions = generate_answers(model, tokenizer, prompts, longest + 1, self.batch_size)
            text = score_answers(predictions, [data["answer"][i] for i in shard])
            scores = {"em": text["em"], "f1": text["f1"]}
        else:
            correct, predictions = greedy_answers(
                model,
                prompts,
                [data["answer_ids"][i] for i in shard],
                tokenizer.pad_token_id,
                tokenizer.eos_token_id,
                self.batch_size,
            )
            scores = {"em": [float(c) for c in correct]}
        if self.loss:
            scores["loss"] = answer_losses(
                model,
                [data["input_ids"][i] for i in shard],
                [data["labels"][i] for i in shard],
                tokenizer.pad_token_id,
                self.batch_size,
            )
        return scores, predictions

    def _sample_rows(
        self, name: str, data: dict[str, list], shard: list[int], scores: dict[str, list[float]], predictions: list[Any]
    ) -> list[dict[str, Any]]:
        """One samples.jsonl row per example of ``shard`` (lm-evaluation-harness's ``--log_samples``):
        the stage, set, index in the set, prompt, gold answer, decoded prediction and ``match``
        (the example's EM; with text answers also its F1)."""
        decode = self.trainer.processing_class.batch_decode

        def texts(column: str, ids: str) -> list[str]:  # the corpus's strings, else the decoded tokens
            if column in data:
                return [data[column][i] for i in shard]
            return [t.strip() for t in decode([data[ids][i] for i in shard], skip_special_tokens=True)]

        if self.answer_match != "text":  # special tokens kept: a greedy EOS reads as one, not as ""
            predictions = [p.strip() for p in decode(predictions, skip_special_tokens=False)]
        rows = []
        prompts, answers = texts("prompt", "prompt_ids"), texts("answer", "answer_ids")
        for k, (i, prompt, answer) in enumerate(zip(shard, prompts, answers)):
            row = {
                "stage": self.trainer.stage_name,
                "subset": name,
                "index": i,
                "prompt": prompt,
                "answer": answer,
                "prediction": predictions[k],
                "match": scores["em"][k] == 1.0,
            }
            if "f1" in scores:
                row["f1"] = scores["f1"][k]
            rows.append(row)
        return rows

    def on_train_end(self, args, state: TrainerState, control, **kwargs) -> None:
        """The stage-end evaluation, keeping the per-example samples when asked."""
        self.collecting = self.keep_samples
        try:
            super().on_train_end(args, state, control, **kwargs)
        finally:
            self.collecting = False

    def write_samples(self, path: str | Path) -> None:
        """Write the last stage-end evaluation's ``samples`` as JSON lines, atomically (a killed
        run never leaves half a file)."""
        lines = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in self.samples)
        write_atomic(Path(path), lambda tmp: tmp.write_text(lines, encoding="utf-8"))

    def on_train_begin(self, args, state: TrainerState, control, **kwargs) -> None:
        """With ``at_start``, measure before the stage's first step (not when resuming inside it):
        the baseline of a branch stage, on the branch's own split."""
        if self.at_start and state.global_step == 0:
            self._maybe_measure(state)
            self.start = dict(self.latest)

    def measure(self, state: TrainerState) -> dict[str, float]:
        """Score every set; under several processes each scores a shard and the sums are added."""
        processes = PartialState()
        metrics: dict[str, dict[str, float]] = {}
        samples: list[dict[str, Any]] = []
        sets = console.progress(
            self.sets.items(),
            f"eval {getattr(self.trainer, 'stage_name', '')}".strip(),
            len(self.sets),
            processes.is_main_process,
        )
        for name, data in sets:
            shard, own = padded_shard(len(data["prompt_ids"]), processes.process_index, processes.num_processes)
            scores, predictions = self._scores(data, shard)
            rows = self._sample_rows(name, data, shard[:own], scores, predictions[:own]) if self.collecting else []
            sums = gather_object([({k: sum(v[:own]) for k, v in scores.items()}, own, rows)])
            count = max(sum(n for _, n, _ in sums), 1)
            metrics[name] = {k: sum(s[k] for s, _, _ in sums) / count for k in scores}
            samples += [row for _, _, shard_rows in sums for row in shard_rows]  # processes in rank order
        self.emit(state, "eval", [(name, k, v, {}) for name, values in metrics.items() for k, v in values.items()])
        self.latest = {name: values["em"] for name, values in metrics.items()}
        self.latest_metrics = metrics
        if self.collecting:
            self.samples = samples
        return self.latest
