"""Gradient alignment of definitions with the questions about the same alias, through all stages.

For each subset with definitions (X1^t, X1^f, X2^t, X2^f in the toy task) a fixed sample of aliases
is drawn once; every sampled alias's definition is paired with some of its questions (training
and held-out alike: in X2 all of them are held out and serve only for their gradients, never for an
update). Logged per subset and parameter group: the mean pair cosine with its 95% confidence
interval over pairs, and the cosine between the subset's mean definition gradient and its mean
question gradient.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datasets import DatasetDict
from transformers import TrainerState

from iml_hf.config.measurement_args import GradientAlignmentArguments
from iml_hf.measure.callbacks.interval import IntervalCallback
from iml_hf.measure.gradients import ExampleBatch, gradient_cosines_by_group, mean_gradient, pair_cosines
from iml_hf.reporting.stats import mean_ci

if TYPE_CHECKING:
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog


@dataclass
class AlignmentSample:
    """The examples of one subset (definitions first, then questions) and the (definition, question)
    index pairs that share an alias."""

    batch: ExampleBatch
    pairs: list[tuple[int, int]]
    num_definitions: int
    rows: list[dict[str, Any]]  # the corpus rows of the examples (text, key, kind, ...)

    def part(self, start: int, stop: int) -> ExampleBatch:
        return self.batch.select(slice(start, stop))


def alignment_subsets(tokenized: DatasetDict) -> list[str]:
    """Subsets that have definition rows, in corpus order."""
    seen: dict[str, None] = {}
    for split in tokenized.values():
        for subset, kind in zip(split["subset"], split["kind"]):
            if kind == "definition":
                seen.setdefault(subset)
    return list(seen)


def alignment_samples(
    tokenized: DatasetDict,
    pad_token_id: int,
    subsets: list[str] | None = None,
    aliases_per_subset: int = 16,
    questions_per_alias: int = 4,
    seed: int = 0,
) -> dict[str, AlignmentSample]:
    """A fixed sample of definition-question pairs per subset (the same ``seed`` gives the same sample)."""
    rows_by_key: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for split in tokenized.values():
        for row in split.select_columns(["subset", "kind", "key", "text", "prompt", "answer", "input_ids", "labels"]):
            if row["key"] and row["kind"] in ("definition", "question"):
                entry = rows_by_key.setdefault((row["subset"], row["key"]), {"definition": [], "question": []})
                if row["kind"] == "question" or all(d["text"] != row["text"] for d in entry["definition"]):
                    entry[row["kind"]].append(row)
    rng = random.Random(seed)
    samples = {}
    for subset in subsets or alignment_subsets(tokenized):
        keys = sorted(
            k
            for s, k in rows_by_key
            if s == subset and rows_by_key[s, k]["definition"] and rows_by_key[s, k]["question"]
        )
        if not keys:
            raise ValueError(f"subset {subset!r} has no alias with both definitions and questions")
        keys = sorted(rng.sample(keys, min(aliases_per_subset, len(keys))))
        definitions: list[dict[str, Any]] = []
        questions: list[dict[str, Any]] = []
        pairs: list[tuple[int, int]] = []
        for key in keys:
            entry = rows_by_key[subset, key]
            chosen = rng.sample(entry["question"], min(questions_per_alias, len(entry["question"])))
            for definition in entry["definition"]:
                definitions.append(definition)
                pairs.extend((len(definitions) - 1, len(questions) + q) for q in range(len(chosen)))
            questions.extend(chosen)
        batch = ExampleBatch.from_rows(definitions + questions, pad_token_id)
        offset = len(definitions)
        samples[subset] = AlignmentSample(batch, [(d, offset + q) for d, q in pairs], offset, definitions + questions)
    return samples


def measure_alignment(
    model, samples: dict[str, AlignmentSample], method: str = "factored", chunk_size: int = 64
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{"pairs": {subset: {group: mean_ci}}, "aliases": {...}, "mean_gradient": {subset: {group:
    {"cosine": c}}}}``. ``pairs`` is over definition-question pairs (as the paper reports); ``aliases``
    first averages each alias's pairs, so its interval does not treat pairs that share a definition
    as independent."""
    pairs, aliases, means = {}, {}, {}
    for subset, sample in samples.items():
        cosines = pair_cosines(model, sample.batch, sample.pairs, method=method, chunk_size=chunk_size)
        pairs[subset] = {group: mean_ci(values.tolist()) for group, values in cosines.items()}
        by_definition: dict[int, list[int]] = {}
        for index, (definition, _) in enumerate(sample.pairs):
            by_definition.setdefault(definition, []).append(index)
        aliases[subset] = {
            group: mean_ci([float(values[indices].nanmean()) for indices in by_definition.values()])
            for group, values in cosines.items()
        }
        n = sample.num_definitions
        definition_grad = mean_gradient(model, sample.part(0, n))
        question_grad = mean_gradient(model, sample.part(n, len(sample.batch)))
        means[subset] = {
            group: {"cosine": c}
            for group, c in gradient_cosines_by_group(definition_grad, question_grad, model).items()
        }
    return {"pairs": pairs, "aliases": aliases, "mean_gradient": means}


class GradientAlignmentCallback(IntervalCallback):
    """Logs ``grad_align/<subset>/<group>`` (mean pair cosine, with ``_ci_low``/``_ci_high``) and
    ``grad_align_mean/<subset>/<group>`` through ``trainer.log`` and into ``metrics.jsonl``."""

    label = "gradient alignment"

    main_process_only = True

    def __init__(
        self,
        trainer: IMLTrainer,
        samples: dict[str, AlignmentSample],
        metrics_log: MetricsLog,
        args: GradientAlignmentArguments,
    ):
        super().__init__(trainer, metrics_log, args.interval, args.interval_strategy)
        self.samples = samples
        self.method = args.method
        self.chunk_size = args.chunk_size
        self.latest: dict[str, Any] = {}

    def measure(self, state: TrainerState) -> None:
        result = measure_alignment(self.trainer.model, self.samples, self.method, self.chunk_size)
        entries = []
        for subset, groups in result["pairs"].items():
            for group, summary in groups.items():
                by_alias = result["aliases"][subset][group]
                entries.append(
                    (
                        subset,
                        group,
                        summary["mean"],
                        {
                            "ci_low": summary["ci_low"],
                            "ci_high": summary["ci_high"],
                            "n": summary["n"],
                            "alias_ci_low": by_alias["ci_low"],
                            "alias_ci_high": by_alias["ci_high"],
                            "aliases": by_alias["n"],
                        },
                    )
                )
        self.emit(state, "grad_align", entries)
        self.emit(
            state,
            "grad_align_mean",
            [
                (subset, group, value["cosine"], {})
                for subset, groups in result["mean_gradient"].items()
                for group, value in groups.items()
            ],
        )
        self.latest = result
