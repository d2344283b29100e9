"""Settings of the measurements a recipe can switch on: one dataclass per recipe section.

The recipe parser reads these (the section's keys, types, help and defaults), and so does the
``python -m iml_hf.analyze`` command line for the analyses it shares with the run. Each dataclass
names its section (``section``), checks its own values (``__post_init__``) and, once the task is
known, the subsets it names (``check_task``). What runs during training (inputs, callbacks) and
how the report reads the results is the run-time half, :mod:`iml_hf.measure.registry`; this half
imports no training code, so parsing a recipe stays free of torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from iml_hf.config.validation import check_at_least, check_choice, invalid, suggest


class MeasurementArguments(Protocol):
    """What every measurement's settings have: the recipe section they are read from and a switch."""

    section: ClassVar[str]
    enabled: bool


INTERVAL_STRATEGIES = ("steps", "epoch")


@dataclass
class GradientAlignmentArguments:
    """Gradient alignment between definitions and the questions about the same alias (``key``).

    Measured every ``interval`` steps (or epochs) of a stage and at each stage's end, on a fixed
    sample of ``aliases_per_subset`` aliases per subset and ``questions_per_alias`` questions each.
    """

    section: ClassVar[str] = "gradient_alignment"

    enabled: bool = field(default=False, metadata={"help": "Measure gradient alignment."})
    interval: int = field(
        default=0,
        metadata={"help": "Measure every this many steps (or epochs) of a stage; 0: only at each stage's end."},
    )
    interval_strategy: str = field(
        default="steps", metadata={"help": "Unit of interval.", "choices": INTERVAL_STRATEGIES}
    )
    subsets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Subsets whose definitions are compared with their questions; null: every subset with definitions."
        },
    )
    aliases_per_subset: int = field(default=16, metadata={"help": "Aliases sampled per subset (a fixed sample)."})
    questions_per_alias: int = field(default=4, metadata={"help": "Questions sampled per alias."})
    method: str = field(
        default="factored",
        metadata={
            "help": "How per-example gradients are computed: factored (one batched backward) or vmap.",
            "choices": ("factored", "vmap"),
        },
    )
    chunk_size: int = field(default=64, metadata={"help": "Examples per backward pass (memory vs speed)."})

    def __post_init__(self) -> None:
        _check_interval("gradient_alignment", self.interval, self.interval_strategy)
        if self.method not in ("factored", "vmap"):
            raise ValueError(f"gradient_alignment.method={self.method!r}; use 'factored' or 'vmap'")
        for key in ("aliases_per_subset", "questions_per_alias", "chunk_size"):
            check_at_least(f"gradient_alignment.{key}", getattr(self, key), 1)

    def check_task(self, task: Any) -> None:
        """The subsets named are the task's."""
        for subset in self.subsets or []:
            if subset not in task.subsets:
                raise ValueError(f"gradient_alignment.subsets names {subset!r}{suggest(subset, list(task.subsets))}")


@dataclass
class EmbeddingGeometryArguments:
    """Cosine similarities of number and alias input embeddings, at each stage's end and
    optionally every ``interval`` steps (or epochs); ``plots`` writes a heatmap PNG each time."""

    section: ClassVar[str] = "embedding_geometry"

    enabled: bool = field(default=False, metadata={"help": "Measure the embedding geometry."})
    interval: int = field(
        default=0,
        metadata={"help": "Measure every this many steps (or epochs) of a stage; 0: only at each stage's end."},
    )
    interval_strategy: str = field(
        default="steps", metadata={"help": "Unit of interval.", "choices": INTERVAL_STRATEGIES}
    )
    plots: bool = field(default=True, metadata={"help": "Write a heatmap PNG of the cosine matrix each time."})

    def __post_init__(self) -> None:
        _check_interval("embedding_geometry", self.interval, self.interval_strategy)


@dataclass
class LayerAnalysisArguments:
    """The layer-wise analysis (``iml_hf.analyze``) of the model at the end of every stage, on the
    ``split`` rows of the corpus; the other keys are those of ``python -m iml_hf.analyze layers``."""

    section: ClassVar[str] = "layer_analysis"

    enabled: bool = field(default=False, metadata={"help": "Run the layer-wise analysis at the end of every stage."})
    split: str = field(
        default="test", metadata={"help": "Corpus rows the analysis reads.", "choices": ("train", "test")}
    )
    max_tokens: int = field(default=5000, metadata={"help": "Token positions analysed at most."})
    min_position: int = field(
        default=4,
        metadata={"help": "First position analysed in each sequence (earlier tokens have too little context)."},
    )
    max_final_loss: float | None = field(
        default=1.0,
        metadata={"help": "Keep only tokens whose final loss is at most this (tokens the model predicts); null: all."},
    )
    batch_size: int = field(default=64, metadata={"help": "Sequences per forward pass."})
    pca_samples: int | None = field(
        default=None,
        metadata={"help": "Trajectories in the PCA plot; 0: no plot; null: the paper's 50 for GPT-2, 150 otherwise."},
    )
    linear_model_tokens: int = field(
        default=64, metadata={"help": "Tokens for the linearized-layer eigenvalue table (Table 2); 0: no table."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the token sample."})

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"layer_analysis.split={self.split!r}; use 'train' or 'test'")
        for key in ("max_tokens", "batch_size"):
            check_at_least(f"layer_analysis.{key}", getattr(self, key), 1)
        check_at_least(
            "layer_analysis.pca_samples",
            self.pca_samples,
            0,
            note="0 = no PCA plot, null = the paper's 50 for GPT-2, 150 otherwise",
        )
        check_at_least("layer_analysis.linear_model_tokens", self.linear_model_tokens, 0, note="0 = no Table 2")
        check_at_least("layer_analysis.min_position", self.min_position, 0)
        check_at_least("layer_analysis.seed", self.seed, 0)
        check_at_least("layer_analysis.max_final_loss", self.max_final_loss, 0, "a number")


#: What a probe can predict from a variable's representation (``iml_hf.analysis.probes``): the define
#: tag of its definition, whether the definition is consistent, what it stands for, and every
#: attribute asked about it (``attributes``; one of them: ``attribute/<relation>``).
PROBE_TARGETS = ("tag", "consistent", "referent", "attributes")
PROBE_POSITIONS = ("mean", "last")


def check_probe_targets(key: str, targets: Any) -> None:
    """``targets`` is a non-empty list of :data:`PROBE_TARGETS` or ``attribute/<relation>`` names."""
    expected = f"a non-empty list of {list(PROBE_TARGETS)} or 'attribute/<relation>'"
    if not isinstance(targets, list) or not targets:
        raise invalid(key, targets, expected)
    for target in targets:
        if not isinstance(target, str) or not (
            target in PROBE_TARGETS or (target.startswith("attribute/") and len(target) > len("attribute/"))
        ):
            hint = suggest(target, [*PROBE_TARGETS, "attribute/<relation>"])
            raise invalid(key, targets, expected + (f" ({target!r}{hint})" if hint else ""))


@dataclass
class ProbeArguments:
    """Linear probes (``iml_hf.analysis.probes``) at the end of every stage: for every variable
    defined in ``subsets`` (null: every subset its task declares with a define tag,
    ``subset_meanings``), a logistic
    regression on its hidden state at every layer (the mean over its tokens, or the ``last``
    one), cross-validated over ``folds`` folds grouped by referent, for each of ``targets``."""

    section: ClassVar[str] = "probes"

    enabled: bool = field(default=False, metadata={"help": "Train linear probes at the end of every stage."})
    targets: list[str] = field(
        default_factory=lambda: ["tag", "consistent", "attributes"],
        metadata={"help": "What the probes predict: tag, consistent, referent, attributes, or attribute/<relation>."},
    )
    subsets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Subsets whose variables are probed; null: every subset its task declares with a define tag."
        },
    )
    folds: int = field(default=5, metadata={"help": "Cross-validation folds, grouped by referent (>= 2)."})
    position: str = field(
        default="mean",
        metadata={
            "help": "Representation of a variable: the mean over its tokens, or its last token.",
            "choices": PROBE_POSITIONS,
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the folds."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per forward pass."})
    max_iter: int = field(default=1000, metadata={"help": "Iterations of each logistic regression at most."})

    def __post_init__(self) -> None:
        check_probe_targets("probes.targets", self.targets)
        if self.subsets is not None and not self.subsets:
            raise invalid("probes.subsets", self.subsets, "a non-empty list of subsets, or null for every defined one")
        check_at_least("probes.folds", self.folds, 2)
        check_choice("probes.position", self.position, PROBE_POSITIONS)
        check_at_least("probes.seed", self.seed, 0)
        check_at_least("probes.batch_size", self.batch_size, 1)
        check_at_least("probes.max_iter", self.max_iter, 1)

    def check_task(self, task: Any) -> None:
        """The subsets named are the task's."""
        for subset in self.subsets or []:
            if subset not in task.subsets:
                raise ValueError(
                    f"probes.subsets names {subset!r}{suggest(subset, list(task.subsets))} "
                    f"(subsets: {list(task.subsets)})"
                )


def _check_interval(section: str, interval: int, strategy: str) -> None:
    check_at_least(f"{section}.interval", interval, 0, note="0 = only at the end of each stage")
    check_choice(f"{section}.interval_strategy", strategy, INTERVAL_STRATEGIES)


#: Every measurement's settings by recipe section, in the order results and reports list them.
MEASUREMENT_ARGUMENTS: dict[str, type] = {
    cls.section: cls
    for cls in (GradientAlignmentArguments, EmbeddingGeometryArguments, LayerAnalysisArguments, ProbeArguments)
}


def check_measurements_against_task(measurements: dict[str, Any], task: Any) -> None:
    """Each measurement's own check of what it names against the task (a ValueError if not)."""
    for arguments in measurements.values():
        check = getattr(arguments, "check_task", None)
        if check is not None:
            check(task)
