"""Dataclasses that describe one run: model, evaluation, stages and the run itself.

Task arguments live next to each task (``iml_hf.tasks``); the training arguments of every stage
are plain ``transformers.TrainingArguments`` fields. ``iml_hf.config.recipe`` turns YAML plus command
line into these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iml_hf.config.validation import check_at_least, check_between, check_choice

SCRATCH_ARCHITECTURES = ("gpt2", "llama", "gpt_neox")
#: Which tokens of a training question carry the loss (``model.loss_on``; iml_hf.data.tokenization).
LOSS_MODES = ("answer", "full_text")


#: Model keys that describe a model built from scratch; next to ``model_name_or_path`` they are an error.
FROM_SCRATCH_KEYS = (
    "architecture",
    "num_layers",
    "hidden_size",
    "num_heads",
    "intermediate_size",
    "attention_only",
    "dropout",
    "tie_word_embeddings",
    "max_position_embeddings",
    "config_overrides",
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

    architecture: str = field(
        default="gpt2",
        metadata={"help": "Architecture of a model built from scratch.", "choices": SCRATCH_ARCHITECTURES},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained decoder-only checkpoint to train (a folder or a Hub id); null: build a model from "
            "scratch from the keys below."
        },
    )
    revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of the checkpoint (e.g. Pythia's step1000)."}
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype of the parameters (auto: the checkpoint's); for mixed precision keep float32 and set "
            "training.bf16 or training.fp16.",
            "choices": DTYPES,
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel passed to transformers (eager, sdpa, flash_attention_2); null: transformers' "
            "default."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run the checkpoint's own modelling code from the Hub (only for a checkpoint you trust)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id; null: the checkpoint's, or a word-level tokenizer built from the "
            "corpus for a model from scratch."
        },
    )
    add_task_tokens: bool = field(
        default=False,
        metadata={
            "help": "Give the task's invented words (aliases, variables, define tags) one token each in a "
            "pretrained tokenizer; false: they stay plain text."
        },
    )
    loss_on: str | None = field(
        default=None,
        metadata={
            "help": "Which tokens of a training question carry the loss: its answer, or its full text; null: the "
            "task's default.",
            "choices": LOSS_MODES,
        },
    )
    num_layers: int = field(default=1, metadata={"help": "Transformer blocks of a model from scratch."})
    hidden_size: int = field(
        default=128,
        metadata={"help": "Width of the residual stream (d_model) of a model from scratch; divisible by num_heads."},
    )
    num_heads: int = field(default=4, metadata={"help": "Attention heads per block of a model from scratch."})
    intermediate_size: int | None = field(
        default=None, metadata={"help": "Width of the MLP of a model from scratch; null: 4 x hidden_size."}
    )
    attention_only: bool = field(
        default=False, metadata={"help": "Blocks without MLPs (attention-only transformer, as in the toy paper)."}
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout of a model from scratch (residual, attention and embedding), in [0, 1)."},
    )
    tie_word_embeddings: bool = field(
        default=True, metadata={"help": "Share the input embedding and the LM head of a model from scratch."}
    )
    max_position_embeddings: int = field(
        default=64,
        metadata={"help": "Longest sequence a model from scratch takes, in tokens (the corpus's longest must fit)."},
    )
    config_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Further fields of the model config of a model from scratch, e.g. {rope_theta: 10000}."},
    )

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
            hint = (
                " (float16 parameters make AdamW give NaN; keep float32 and set training.fp16=true)"
                if self.dtype == "float16"
                else ""
            )
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

    subsets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Evaluation sets to score: held-out sets (x2t, d1consis, assoc_who_d1consis) and monitoring sets "
            "of training rows (train_question_qd1consis); null: every held-out set, plus the monitoring sets "
            "with monitor_train."
        },
    )
    extra_subsets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Sets added to the default ones (e.g. train_question_knowledge: is the knowledge retained?)."
        },
    )
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every this many steps of a stage; 0: only at the end of each stage."}
    )
    batch_size: int = field(default=1024, metadata={"help": "Evaluation batch size (greedy answers and losses)."})
    max_examples_per_subset: int | None = field(
        default=None, metadata={"help": "Score at most this many rows per set (a fixed sample); null: all of them."}
    )
    monitor_train: bool = field(
        default=False,
        metadata={"help": "Also score the training questions and definitions of every subset (train_<kind>_<subset>)."},
    )
    loss: bool = field(default=True, metadata={"help": "Also record each set's teacher-forced answer loss."})
    readout_step: int | None = field(
        default=None,
        metadata={
            "help": "Step of the last stage at which the report reads its headline contrasts, declared before any "
            "run; null: the stage's end."
        },
    )

    def __post_init__(self) -> None:
        check_at_least("evaluation.eval_steps", self.eval_steps, 0, note="0 = only at the end of each stage")
        check_at_least("evaluation.batch_size", self.batch_size, 1)
        check_at_least("evaluation.max_examples_per_subset", self.max_examples_per_subset, 1)
        check_at_least("evaluation.readout_step", self.readout_step, 1, note="or null for the last stage's end")
        if self.subsets is not None and self.extra_subsets:
            raise ValueError(
                "evaluation.extra_subsets adds to the default sets; with evaluation.subsets list them there"
            )


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

    name: str = field(metadata={"help": "The stage's name (a key stages.<name>.*, a folder and a column)."})
    train_subsets: list[str] = field(metadata={"help": "Subsets the stage trains on (required)."})
    train_kinds: list[str] | None = field(
        default=None,
        metadata={"help": "Keep only rows of these kinds (question, definition, pair, association); null: every kind."},
    )
    replay: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Share of the stage's examples drawn from earlier subsets, e.g. {pretrain: 0.5}; shares sum to < 1."
        },
    )
    reset_optimizer: bool = field(
        default=True,
        metadata={"help": "Start the stage with a fresh optimizer; false: carry the previous stage's optimizer state."},
    )
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "This stage's overrides of the run's TrainingArguments (given as stages.<name>.<key>)."},
    )

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
    """Top-level keys of a recipe: the run's folder and seed, the Hub (``iml_hf.training.hub``,
    ``iml_hf.push_corpus``; the token never is a recipe key), resuming (``iml_hf.training.pipeline``: a run
    writes into ``<output_dir>.partial``, which replaces ``output_dir`` when it finishes; a killed run
    resumes from its last checkpoint) and stage-2 branches (``iml_hf.training.branching``: the stages before
    ``branch_stage`` run once per seed into ``<output_dir>/trunk``, the rest K times into
    ``<output_dir>/branch<b>``, each on a counterbalanced re-split, ``iml_hf.tasks.resplit``). Each
    field's ``help`` says what it does (``--help``, docs/recipe-keys.md)."""

    output_dir: str = field(
        default="runs/default",
        metadata={
            "help": "Folder of the run (results.json, metrics.jsonl, the model); written as <output_dir>.partial "
            "until the run finishes."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the corpus, the model's initialisation and the training order."}
    )
    torch_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads torch may use; null: torch's default (set it when runs share a machine)."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where built corpora are cached; null: $IML_HF_CACHE or ~/.cache/iml_hf."}
    )
    save_model: bool = field(default=True, metadata={"help": "Save the final model and tokenizer in output_dir."})
    tracker_group: str | None = field(
        default=None,
        metadata={
            "help": "The runs' group in the trackers (wandb); null: the recipe file's stem (a sweep sets its name)."
        },
    )
    # The Hub (iml_hf.training.hub, iml_hf.push_corpus). The token never is a recipe key.
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Push the finished run (model, results, card) to the Hub model repo hub_model_id."},
    )
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub model repo to push to ('name' or 'user/name'); null: the run name, <recipe stem>-seed<S>."
        },
    )
    hub_private: bool = field(default=True, metadata={"help": "Make a new Hub repo private."})
    hub_stage_branches: bool = field(
        default=False, metadata={"help": "Also push each stage's weights to a branch named after the stage."}
    )
    corpus_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Read the corpus from this Hub dataset or local folder (as push_corpus writes it) instead of "
            "building it."
        },
    )
    corpus_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of corpus_dataset."})
    corpus_repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo that python -m iml_hf.push_corpus pushes the corpus to."}
    )
    # Resuming (iml_hf.training.pipeline).
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a finished run already in output_dir (otherwise the run refuses to start)."},
    )
    checkpoint_steps: int = field(
        default=500,
        metadata={"help": "Save a resumable checkpoint every this many steps of a stage; 0: only at stage ends."},
    )
    # Stage-2 branches (iml_hf.training.branching, iml_hf.tasks.resplit).
    branches: int = field(
        default=0,
        metadata={
            "help": "Run the branch stage this many times (even: counterbalanced pairs) from one trunk, each on a "
            "re-split of the task's exchangeable subsets; 0: a plain run."
        },
    )
    branch_stage: str | None = field(
        default=None, metadata={"help": "First stage that runs per branch; null: the last stage."}
    )
    only_branch: int | None = field(
        default=None,
        metadata={
            "help": "Run only this branch (0 .. branches - 1), after the trunk if it has not finished; null: all."
        },
    )

    def __post_init__(self) -> None:
        check_at_least("seed", self.seed, 0)
        check_at_least("torch_threads", self.torch_threads, 1, note="or null for torch's default")
        for key in ("output_dir", "cache_dir"):
            if getattr(self, key) == "":
                raise ValueError(f"{key}='' is not valid: expected a folder name")
        if not isinstance(self.branches, int) or self.branches < 0 or self.branches % 2:
            raise ValueError(
                f"branches={self.branches!r} is not valid: expected an even number >= 0 "
                "(branches come in counterbalanced pairs; 0: a plain run)"
            )
        if self.only_branch is not None and not (self.branches and 0 <= self.only_branch < self.branches):
            raise ValueError(
                f"only_branch={self.only_branch!r} is not valid: expected 0 .. branches - 1 "
                f"(branches={self.branches})" + ("; set branches first" if not self.branches else "")
            )
        if not isinstance(self.checkpoint_steps, int) or self.checkpoint_steps < 0:
            raise ValueError(
                f"checkpoint_steps={self.checkpoint_steps!r} must be an integer >= 0 (0: only at stage ends)"
            )
