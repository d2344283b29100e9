"""Dataclasses that describe one run: model, evaluation, stages and the run itself.

Task arguments live next to each task (``iml_hf.tasks``); the training arguments of every stage
are plain ``transformers.TrainingArguments`` fields. ``iml_hf.recipe`` turns YAML plus command
line into these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iml_hf.validation import check_at_least, check_between, check_choice, invalid, suggest

SCRATCH_ARCHITECTURES = ("gpt2", "llama", "gpt_neox")
#: Which tokens of a training question carry the loss (``model.loss_on``; iml_hf.tokenization).
LOSS_MODES = ("answer", "full_text")


#: Model keys that describe a model built from scratch; next to ``model_name_or_path`` they are an error.
FROM_SCRATCH_KEYS = (
    "architecture", "num_layers", "hidden_size", "num_heads", "intermediate_size", "attention_only", "dropout",
    "tie_word_embeddings", "max_position_embeddings", "config_overrides",
)
#: Model keys that only mean something for a checkpoint; without ``model_name_or_path`` they are an error.
CHECKPOINT_KEYS = ("revision", "trust_remote_code")
#: Parameter dtypes a run may train in. float16 parameters are not among them: AdamW's epsilon
#: rounds to zero in float16 and a zero gradient then gives NaN; use float32 with training.fp16.
DTYPES = ("float32", "bfloat16", "auto")


@dataclass
class ModelArguments:
    """A from-scratch model (architecture + sizes) or a pretrained decoder-only checkpoint
    (``model_name_or_path``: a folder or a hub id, at ``revision``: a branch such as Pythia's
    ``step1000``, a tag or a commit). ``add_task_tokens`` gives the task's aliases and define tags
    tokens of their own in a pretrained tokenizer (by default they stay plain text)."""

    architecture: str = "gpt2"
    model_name_or_path: str | None = None
    revision: str = "main"
    dtype: str = "float32"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    tokenizer_name_or_path: str | None = None
    add_task_tokens: bool = False
    loss_on: str | None = None
    num_layers: int = 1
    hidden_size: int = 128
    num_heads: int = 4
    intermediate_size: int | None = None
    attention_only: bool = False
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 64
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in SCRATCH_ARCHITECTURES:
            raise ValueError(
                f"model.architecture={self.architecture!r} is not supported; use one of {SCRATCH_ARCHITECTURES}"
            )
        for key in ("num_layers", "hidden_size", "num_heads", "max_position_embeddings", "intermediate_size"):
            check_at_least(f"model.{key}", getattr(self, key), 1)
        check_between("model.dropout", self.dropout, 0, 1, high_open=True)
        if self.loss_on is not None:
            check_choice("model.loss_on", self.loss_on, LOSS_MODES)
        if self.model_name_or_path is not None and not self.model_name_or_path:
            raise ValueError("model.model_name_or_path='' is not valid: expected a folder or a Hub id (or null)")
        if self.dtype not in DTYPES:
            hint = " (float16 parameters make AdamW give NaN; keep float32 and set training.fp16=true)" \
                if self.dtype == "float16" else ""
            raise ValueError(f"model.dtype={self.dtype!r}; use one of {DTYPES}{hint}")
        if self.model_name_or_path is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads={self.num_heads}"
            )


@dataclass
class EvalArguments:
    """Which evaluation sets are scored, and how often (in steps of a stage).

    ``subsets`` names held-out sets (``x2t``, ``d1consis``, ``assoc_d1consis``) and monitoring sets
    of training rows (``train_question_qd1consis``, ``train_definition_d1consis``); null = every
    held-out set of the corpus, plus the monitoring sets when ``monitor_train``; ``extra_subsets``
    adds sets to that default (e.g. ``train_question_knowledge``: is the knowledge retained?).
    ``loss`` adds the teacher-forced answer loss of each set. ``readout_step`` is the step of the
    last stage at which the report reads its headline contrasts (null: the stage's end), declared
    before any run; the report shows every evaluation of the stage beside it.
    """

    subsets: list[str] | None = None
    extra_subsets: list[str] | None = None
    eval_steps: int = 0
    batch_size: int = 1024
    max_examples_per_subset: int | None = None
    monitor_train: bool = False
    loss: bool = True
    readout_step: int | None = None

    def __post_init__(self) -> None:
        check_at_least("evaluation.eval_steps", self.eval_steps, 0, note="0 = only at the end of each stage")
        check_at_least("evaluation.batch_size", self.batch_size, 1)
        check_at_least("evaluation.max_examples_per_subset", self.max_examples_per_subset, 1)
        check_at_least("evaluation.readout_step", self.readout_step, 1, note="or null for the last stage's end")
        if self.subsets is not None and self.extra_subsets:
            raise ValueError("evaluation.extra_subsets adds to the default sets; with evaluation.subsets list them there")


INTERVAL_STRATEGIES = ("steps", "epoch")


@dataclass
class GradientAlignmentArguments:
    """Gradient alignment between definitions and the questions about the same alias (``key``).

    Measured every ``interval`` steps (or epochs) of a stage and at each stage's end, on a fixed
    sample of ``aliases_per_subset`` aliases per subset and ``questions_per_alias`` questions each.
    """

    enabled: bool = False
    interval: int = 0
    interval_strategy: str = "steps"
    subsets: list[str] | None = None
    aliases_per_subset: int = 16
    questions_per_alias: int = 4
    method: str = "factored"
    chunk_size: int = 64

    def __post_init__(self) -> None:
        _check_interval("gradient_alignment", self.interval, self.interval_strategy)
        if self.method not in ("factored", "vmap"):
            raise ValueError(f"gradient_alignment.method={self.method!r}; use 'factored' or 'vmap'")
        for key in ("aliases_per_subset", "questions_per_alias", "chunk_size"):
            check_at_least(f"gradient_alignment.{key}", getattr(self, key), 1)


@dataclass
class EmbeddingGeometryArguments:
    """Cosine similarities of number and alias input embeddings, at each stage's end and
    optionally every ``interval`` steps (or epochs); ``plots`` writes a heatmap PNG each time."""

    enabled: bool = False
    interval: int = 0
    interval_strategy: str = "steps"
    plots: bool = True

    def __post_init__(self) -> None:
        _check_interval("embedding_geometry", self.interval, self.interval_strategy)


@dataclass
class LayerAnalysisArguments:
    """The layer-wise analysis (``iml_hf.analyze``) of the model at the end of every stage, on the
    ``split`` rows of the corpus; the other keys are those of ``python -m iml_hf.analyze layers``."""

    enabled: bool = False
    split: str = "test"
    max_tokens: int = 5000
    min_position: int = 4
    max_final_loss: float | None = 1.0
    batch_size: int = 64
    pca_samples: int | None = None
    linear_model_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("max_tokens", "batch_size"):
            check_at_least(f"layer_analysis.{key}", getattr(self, key), 1)
        check_at_least("layer_analysis.pca_samples", self.pca_samples, 0,
                       note="0 = no PCA plot, null = the paper's 50 for GPT-2, 150 otherwise")
        check_at_least("layer_analysis.linear_model_tokens", self.linear_model_tokens, 0, note="0 = no Table 2")
        check_at_least("layer_analysis.min_position", self.min_position, 0)
        check_at_least("layer_analysis.seed", self.seed, 0)
        check_at_least("layer_analysis.max_final_loss", self.max_final_loss, 0, "a number")


#: What a probe can predict from a variable's representation (``iml_hf.analyze.probes``): the define
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
        if not isinstance(target, str) or not (target in PROBE_TARGETS or
                                               (target.startswith("attribute/") and len(target) > len("attribute/"))):
            hint = suggest(target, [*PROBE_TARGETS, "attribute/<relation>"])
            raise invalid(key, targets, expected + (f" ({target!r}{hint})" if hint else ""))


@dataclass
class ProbeArguments:
    """Linear probes (``iml_hf.analyze.probes``) at the end of every stage: for every variable
    defined in ``subsets`` (null: every subset whose name gives the define tag), a logistic
    regression on its hidden state at every layer (the mean over its tokens, or the ``last``
    one), cross-validated over ``folds`` folds grouped by referent, for each of ``targets``."""

    enabled: bool = False
    targets: list[str] = field(default_factory=lambda: ["tag", "consistent", "attributes"])
    subsets: list[str] | None = None
    folds: int = 5
    position: str = "mean"
    seed: int = 0
    batch_size: int = 256
    max_iter: int = 1000

    def __post_init__(self) -> None:
        check_probe_targets("probes.targets", self.targets)
        if self.subsets is not None and not self.subsets:
            raise invalid("probes.subsets", self.subsets, "a non-empty list of subsets, or null for every defined one")
        check_at_least("probes.folds", self.folds, 2)
        check_choice("probes.position", self.position, PROBE_POSITIONS)
        check_at_least("probes.seed", self.seed, 0)
        check_at_least("probes.batch_size", self.batch_size, 1)
        check_at_least("probes.max_iter", self.max_iter, 1)


def _check_interval(section: str, interval: int, strategy: str) -> None:
    check_at_least(f"{section}.interval", interval, 0, note="0 = only at the end of each stage")
    check_choice(f"{section}.interval_strategy", strategy, INTERVAL_STRATEGIES)


#: Stage keys that are not ``TrainingArguments`` fields.
STAGE_FIELDS = ("name", "train_subsets", "train_kinds", "replay", "reset_optimizer")


@dataclass
class StageArguments:
    """One named training stage: which subsets it trains on and how its training differs.

    ``replay`` maps a subset to the share of the stage's examples drawn from it (for example
    ``{pretrain: 0.5}`` makes half of every epoch pretraining pairs). ``train_kinds`` keeps only
    rows of those kinds (``[definition]``: the definitions of the subsets; null: every kind).
    ``training`` holds overrides of the run's ``TrainingArguments`` for this stage only.
    """

    name: str
    train_subsets: list[str]
    train_kinds: list[str] | None = None
    replay: dict[str, float] = field(default_factory=dict)
    reset_optimizer: bool = True
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.train_subsets:
            raise ValueError(f"stages.{self.name}.train_subsets is empty; name at least one subset to train on")
        from iml_hf.tasks import KINDS

        for kind in self.train_kinds or []:
            if kind not in KINDS:
                raise ValueError(f"stages.{self.name}.train_kinds names {kind!r}; use some of {KINDS}")
        total = sum(self.replay.values())
        if any(v <= 0 for v in self.replay.values()) or total >= 1:
            raise ValueError(
                f"stages.{self.name}.replay={self.replay!r} is not valid: expected shares > 0 that sum to < 1"
            )


@dataclass
class RunArguments:
    """Top-level keys of a recipe. ``tracker_group`` is the runs' group in the trackers (a sweep
    sets its name; null: the recipe file's stem)."""

    output_dir: str = "runs/default"
    seed: int = 0
    torch_threads: int | None = None
    cache_dir: str | None = None
    save_model: bool = True
    tracker_group: str | None = None
    # The Hub (iml_hf.hub, iml_hf.push_corpus): push the finished run to the model repo
    # ``hub_model_id`` (default: the run name, ``<recipe stem>-seed<S>``), private unless said otherwise, with each
    # stage's weights on a branch named after the stage; read the corpus from a dataset (a Hub id
    # or a local folder in the same layout) at ``corpus_revision``; ``corpus_repo_id`` is the
    # dataset repo ``python -m iml_hf.push_corpus`` pushes to. The token never is a recipe key.
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = True
    hub_stage_branches: bool = False
    corpus_dataset: str | None = None
    corpus_revision: str | None = None
    corpus_repo_id: str | None = None
    # Resuming (iml_hf.pipeline): a run writes into ``<output_dir>.partial`` and replaces
    # ``output_dir`` when it finishes; a folder holding a finished run is only replaced with
    # ``overwrite_output_dir``. A killed run resumes from its last checkpoint, saved every
    # ``checkpoint_steps`` steps of a stage (0: only at stage ends).
    overwrite_output_dir: bool = False
    checkpoint_steps: int = 500
    # Stage-2 branches (iml_hf.branching): with ``branches: K`` (even) the stages before
    # ``branch_stage`` (default: the last stage) run once per seed into ``<output_dir>/trunk``, and
    # ``branch_stage`` and the stages after it run K times from the trunk's weights into
    # ``<output_dir>/branch<b>``, each on a re-split of the task's exchangeable subsets, in
    # counterbalanced pairs (``iml_hf.tasks.resplit``); ``only_branch`` runs one of them (after the
    # trunk, if it has not finished), as a sweep does.
    branches: int = 0
    branch_stage: str | None = None
    only_branch: int | None = None

    def __post_init__(self) -> None:
        check_at_least("seed", self.seed, 0)
        check_at_least("torch_threads", self.torch_threads, 1, note="or null for torch's default")
        for key in ("output_dir", "cache_dir"):
            if getattr(self, key) == "":
                raise ValueError(f"{key}='' is not valid: expected a folder name")
        if not isinstance(self.branches, int) or self.branches < 0 or self.branches % 2:
            raise ValueError(f"branches={self.branches!r} is not valid: expected an even number >= 0 "
                             "(branches come in counterbalanced pairs; 0: a plain run)")
        if self.only_branch is not None and not (self.branches and 0 <= self.only_branch < self.branches):
            raise ValueError(f"only_branch={self.only_branch!r} is not valid: expected 0 .. branches - 1 "
                             f"(branches={self.branches})" + ("; set branches first" if not self.branches else ""))
        if not isinstance(self.checkpoint_steps, int) or self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps={self.checkpoint_steps!r} must be an integer >= 0 (0: only at stage ends)")
