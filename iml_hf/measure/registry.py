"""Measurements at run time: one spec per measurement, read by the pipeline and the report.

A spec takes its settings dataclass (:mod:`iml_hf.config.measurement_args`, which names the
recipe section and checks itself; the parser reads only that half), how to build what it reads
once for all stages (``prepare``), the callback it adds to every stage (``callback``), the key its
last values take in each stage of results.json (``result_key``: the callback's ``latest``), and how
the report reads it back (``report``). Every callback emits through ``IntervalCallback.emit``, so
trackers and metrics.jsonl carry the same names.

Factories import their callbacks when called, so the report reads its ``ReportReader``s without
importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iml_hf.config.measurement_args import (
    MEASUREMENT_ARGUMENTS,
    EmbeddingGeometryArguments,
    GradientAlignmentArguments,
    LayerAnalysisArguments,
    MeasurementArguments,
    ProbeArguments,
)

if TYPE_CHECKING:
    from datasets import DatasetDict
    from transformers import PreTrainedTokenizerBase

    from iml_hf.config.recipe import Recipe
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog


@dataclass(frozen=True)
class ReportReader:
    """How the report reads one measurement: a per-subset value at each stage end (from the
    stage's results entry) and curves over training (metrics.jsonl rows of ``family``)."""

    title: str  # of the stage-end table
    read: Callable[[dict[str, Any]], dict[str, float]]  # results entry -> {subset: value}
    family: str  # metrics.jsonl rows of the curves
    metric: str | None  # only rows of this metric (None: one panel per metric)
    curve_title: str
    ylabel: str = "cosine"


@dataclass(frozen=True)
class Measurement:
    """One measurement's settings, inputs, callback, results key and report readers."""

    arguments: type[MeasurementArguments]  # its settings dataclass, which names the recipe section
    result_key: str
    prepare: Callable[[Recipe, DatasetDict, PreTrainedTokenizerBase], Any]
    callback: Callable[[IMLTrainer, Any, MetricsLog, Path, Any], Any]
    report: list[ReportReader] = field(default_factory=list)

    @property
    def section(self) -> str:
        """The recipe section (and results.json's ``measurements`` key) of this measurement."""
        return self.arguments.section


def _alignment_inputs(recipe: Recipe, tokenized: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> Any:
    from iml_hf.measure.callbacks.grad_alignment import alignment_samples

    args = recipe.measurement_args("gradient_alignment")
    return alignment_samples(
        tokenized,
        tokenizer.pad_token_id,
        args.subsets,
        args.aliases_per_subset,
        args.questions_per_alias,
        seed=recipe.run.seed,
    )


def _alignment_callback(trainer, samples, metrics_log, out, args):
    from iml_hf.measure.callbacks.grad_alignment import GradientAlignmentCallback

    return GradientAlignmentCallback(trainer, samples, metrics_log, args)


def _embedding_inputs(recipe: Recipe, tokenized: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> Any:
    from iml_hf.measure.callbacks.embedding_geometry import EmbeddingLayout, corpus_aliases

    return EmbeddingLayout.build(corpus_aliases(tokenized), tokenizer, list(recipe.task.subsets))


def _embedding_callback(trainer, layout, metrics_log, out, args):
    from iml_hf.measure.callbacks.embedding_geometry import EmbeddingGeometryCallback

    return EmbeddingGeometryCallback(
        trainer, layout, metrics_log, out, args.interval, args.interval_strategy, args.plots
    )


def _layer_inputs(recipe: Recipe, tokenized: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> Any:
    return list(tokenized[recipe.measurement_args("layer_analysis").split]["input_ids"])


def _layer_callback(trainer, sequences, metrics_log, out, args):
    from iml_hf.measure.callbacks.layer_analysis import LayerAnalysisCallback

    return LayerAnalysisCallback(trainer, sequences, metrics_log, out, args)


def _probe_inputs(recipe: Recipe, tokenized: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> Any:
    from iml_hf.analysis.probe_report import ProbeInputs

    args = recipe.measurement_args("probes")
    return ProbeInputs.build(tokenized, tokenizer, args.subsets, args.targets, task=recipe.task)


def _probe_callback(trainer, probes, metrics_log, out, args):
    from iml_hf.measure.callbacks.probes import ProbeCallback

    return ProbeCallback(trainer, probes, metrics_log, out, args)


def _probe_accuracy(entry: dict[str, Any]) -> dict[str, float]:
    """``{"<target> <representation>": accuracy}`` of every probe that ran, plus each target's chance line."""
    names = entry.get("representations", [])
    values: dict[str, float] = {}
    for target, result in entry.get("targets", {}).items():
        if "accuracy" in result:
            values.update({f"{target} {name}": a for name, a in zip(names, result["accuracy"])})
            values[f"{target} (chance)"] = result["chance"]
    return values


_SPECS = (
    Measurement(
        GradientAlignmentArguments,
        "grad_align",
        _alignment_inputs,
        _alignment_callback,
        [
            ReportReader(
                "Gradient alignment (definition-question cosine, all parameters) at the end of each stage",
                lambda entry: {s: v["all"]["mean"] for s, v in entry["pairs"].items()},
                "grad_align",
                None,
                "Definition-question gradient cosine per parameter group",
            )
        ],
    ),
    Measurement(
        EmbeddingGeometryArguments,
        "embedding",
        _embedding_inputs,
        _embedding_callback,
        [
            ReportReader(
                "Alias-referent embedding cosine at the end of each stage",
                lambda entry: {s: v["embed_cos"] for s, v in entry.items()},
                "embedding",
                "embed_cos",
                "Cosine of each alias's embedding with its referent's",
            )
        ],
    ),
    Measurement(
        LayerAnalysisArguments,
        "layers",
        _layer_inputs,
        _layer_callback,
    ),
    Measurement(
        ProbeArguments,
        "probes",
        _probe_inputs,
        _probe_callback,
        [
            ReportReader(
                "Linear-probe accuracy on held-out folds (per target and representation) at the end of each stage",
                _probe_accuracy,
                "probes",
                None,
                "Linear-probe accuracy per target",
                ylabel="accuracy",
            )
        ],
    ),
)
#: Every measurement's run-time spec by recipe section, in the settings' order.
MEASUREMENTS: dict[str, Measurement] = {spec.section: spec for spec in _SPECS}
if list(MEASUREMENTS) != list(MEASUREMENT_ARGUMENTS):
    raise RuntimeError(f"measurement settings {list(MEASUREMENT_ARGUMENTS)} and specs {list(MEASUREMENTS)} differ")
