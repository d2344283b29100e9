"""``--help`` that people read, and the recipe-key reference generated from the same descriptions.

One source: every description is the ``metadata={"help": ...}`` of a dataclass field (the
HfArgumentParser convention): ``RunArguments``, ``ModelArguments``, ``EvalArguments``,
``StageArguments`` and the measurement arguments (``iml_hf.config.args``, ``iml_hf.config.measurement_args``), each task's dataclass
(``iml_hf.tasks``) and, for ``training.*``, transformers' own ``TrainingArguments`` help (its first
sentence). Keys the parser refuses (``training.output_dir``/``seed``, ``resume_from_checkpoint``, the
Trainer's own Hub keys) are never shown.

``TrainingArguments`` has over a hundred fields, most of them about distributed training, the Hub
and integrations that a recipe rarely touches; ``--help`` shows the common ones
(:data:`COMMON_TRAINING_KEYS`) and every training key the recipe sets, so the learning rate is not
buried under ``fsdp_config``; ``--help-all`` and docs/recipe-keys.md list them all.

    python -m iml_hf.config.help --markdown > docs/recipe-keys.md
"""

from __future__ import annotations

import dataclasses
import enum
import re
import sys
import textwrap
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from iml_hf import __version__
from iml_hf.config.args import STAGE_FIELDS, RunArguments, StageArguments
from iml_hf.config.hub_keys import TRAINER_HUB_KEYS
from iml_hf.config.keys import RESERVED_TRAINING_KEYS, SECTION_CLASSES, TRAINING_DEFAULTS, field_types
from iml_hf.config.validation import describe, field_default
from iml_hf.tasks import task_registry

#: TrainingArguments keys shown by ``--help`` (with those the recipe sets); ``--help-all`` shows every one.
COMMON_TRAINING_KEYS = (
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "optim",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "label_smoothing_factor",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "torch_compile",
    "logging_steps",
    "disable_tqdm",
    "report_to",
    "run_name",
    "save_total_limit",
    "data_seed",
    "dataloader_num_workers",
    "per_device_eval_batch_size",
)
#: TrainingArguments keys a recipe may not set, and why (they never appear in the help).
HIDDEN_TRAINING_KEYS = {
    **{key: "set from the top-level key of the same name" for key in RESERVED_TRAINING_KEYS},
    "resume_from_checkpoint": "rerunning the same command resumes a killed run",
    **{
        key: "each stage's Trainer would push before any result exists; use the top-level Hub keys"
        for key in TRAINER_HUB_KEYS
    },
}
#: How the command line reads lists, mappings and null (Markdown; the help shows it without the backticks).
VALUE_SYNTAX = (
    "Values are read as YAML: `--seed=3`, `--model.attention_only=true`, `--task.alpha=null`. A list is "
    "comma-separated or in YAML form: `--evaluation.subsets=x2t,x2f` or `'--evaluation.subsets=[x2t, x2f]'`. "
    "A mapping is YAML: `'--stages.x1.replay={pretrain: 0.5}'`. Precedence: default < recipe < command line."
)
EXAMPLES = (
    ("python -m iml_hf.train recipes/toy.yaml", "run the toy recipe (a few minutes on a laptop CPU)"),
    (
        "python -m iml_hf.train recipes/toy.yaml --seed=3 --stages.x1.max_steps=200 --output_dir=runs/try",
        "override keys",
    ),
    ("python -m iml_hf.train recipes/toy.yaml --evaluation.subsets=x2t,x2f", "a list key"),
    ("python -m iml_hf.train recipes/toy.yaml --help", "the recipe's keys, values and defaults"),
    (
        "accelerate launch --config_file accelerate_configs/multi_gpu.yaml -m iml_hf.train recipes/toy_paper.yaml",
        "on several GPUs (DDP)",
    ),
)
GENERAL_OPTIONS = (
    ("-h, --help", "this help; with a recipe, its keys with their values"),
    ("--help-all", "also every TrainingArguments key"),
    ("--version", "print the version and exit"),
    ("--quiet", "print only errors and the final results (for scripts and logs)"),
    ("--config PATH", "the recipe, instead of the first argument"),
)
_ABOUT = {
    "run": "top-level keys: the run's folder, seed, Hub, resuming and stage-2 branches",
    "task": "the experiment family and its corpus",
    "model": "a model built from scratch, or a pretrained checkpoint",
    "training": "TrainingArguments of every stage (a stage overrides them as stages.<name>.<key>)",
    "evaluation": "which sets are scored, and how often",
    "gradient_alignment": "cosines of definition gradients with the gradients of questions about the same alias",
    "embedding_geometry": "cosine similarities of number and alias input embeddings",
    "layer_analysis": "the layer-wise analysis (python -m iml_hf.analyze layers) at the end of every stage",
    "probes": "linear probes of the variables' hidden states at the end of every stage",
}
#: Marks a key whose recipe value differs from its default.
CHANGED = "*"
_NOTHING = object()


@dataclass(frozen=True)
class KeyDoc:
    """One recipe key as the help shows it: type, description, default, the recipe's value."""

    key: str
    annotation: Any
    help: str
    choices: tuple = ()
    default: Any = _NOTHING  # _NOTHING: required
    default_label: str = "default"
    value: Any = _NOTHING  # _NOTHING: the recipe does not set it


@dataclass
class Section:
    """A titled group of keys, with a line about what it holds and closing notes."""

    title: str
    about: str
    keys: list[KeyDoc]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------- reading


def first_sentences(text: str) -> str:
    """The first sentence of ``text`` (two when the first is short), plain: TrainingArguments' help."""
    text = " ".join(text.replace("`", "").replace("%%", "%").split())
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
    short = sentences[0] if len(sentences[0]) >= 40 or len(sentences) == 1 else " ".join(sentences[:2])
    return short


def field_choices(annotation: Any, f: dataclasses.Field) -> tuple:
    """The values a field takes: its metadata's ``choices``, an Enum's values or a Literal's."""
    if "choices" in f.metadata:
        return tuple(f.metadata["choices"])
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, enum.Enum):
            return tuple(e.value for e in member)
        if typing.get_origin(member) is typing.Literal:
            return tuple(a for a in typing.get_args(member) if a is not False)
    return ()


def _members(annotation: Any) -> tuple:
    """A union's members (``int | None`` -> int, None), or the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def dataclass_keys(cls: type, prefix: str, skip: tuple[str, ...] = (), training: bool = False) -> list[KeyDoc]:
    """Every init field of ``cls`` as a KeyDoc named ``<prefix><field>`` (TrainingArguments: first sentence)."""
    types_ = field_types(cls)
    docs = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        text = f.metadata.get("help", "")
        docs.append(
            KeyDoc(
                f"{prefix}{f.name}",
                types_[f.name],
                first_sentences(text) if training else text,
                field_choices(types_[f.name], f),
                _NOTHING if (default := field_default(f)) is dataclasses.MISSING else default,
            )
        )
    return docs


def training_keys(every: bool = False, wanted: Collection[str] = ()) -> list[KeyDoc]:
    """The ``training.*`` keys: the common ones and ``wanted`` (all with ``every``), never a refused one;
    defaults are the toolkit's where it sets its own (TRAINING_DEFAULTS)."""
    keys = dataclass_keys(TrainingArguments, "training.", skip=tuple(HIDDEN_TRAINING_KEYS), training=True)
    keys = [
        dataclasses.replace(k, default=TRAINING_DEFAULTS[k.key[9:]], default_label="default (the toolkit's)")
        if k.key[9:] in TRAINING_DEFAULTS
        else k
        for k in keys
    ]
    if every:
        return keys
    shown = {*COMMON_TRAINING_KEYS, *TRAINING_DEFAULTS, *wanted}
    return [k for k in keys if k.key[9:] in shown]


# ------------------------------------------------------------------------------------ sections


def _with_values(keys: list[KeyDoc], values: dict[str, Any]) -> list[KeyDoc]:
    """``keys`` with the recipe's value of each key it sets."""
    return [dataclasses.replace(k, value=values[k.key]) if k.key in values else k for k in keys]


def _flat_values(nested: dict[str, Any]) -> dict[str, Any]:
    """A recipe's values by dotted key (``model.num_layers``, ``stages.x1.max_steps``), as written."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if key == "stages" and isinstance(value, list):
            for stage in value:
                if isinstance(stage, dict) and isinstance(stage.get("name"), str):
                    flat.update({f"stages.{stage['name']}.{k}": v for k, v in stage.items() if k != "name"})
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def sections(nested: dict[str, Any] | None = None, every: bool = False) -> list[Section]:
    """The help's sections for a recipe (``nested``, as read from its file) or, without one, for every
    task; ``every`` lists every TrainingArguments key."""
    nested = nested or {}
    values = _flat_values(nested)
    registry = task_registry()
    task_name = (nested.get("task") or {}).get("name") if isinstance(nested.get("task"), dict) else None
    out = [Section("run", _ABOUT["run"], _with_values(dataclass_keys(RunArguments, ""), values))]
    name_doc = KeyDoc(
        "task.name", str, "The task: which experiment family builds the corpus.", tuple(registry), _NOTHING
    )
    if task_name in registry:
        keys = [
            dataclasses.replace(name_doc, value=task_name),
            *dataclass_keys(registry[task_name], "task.", skip=("name",)),
        ]
        out.append(
            Section(
                f"task ({task_name})",
                _ABOUT["task"],
                _with_values(keys, values),
                [
                    f"other tasks: {', '.join(n for n in registry if n != task_name)}; "
                    "--task.name=NAME --help shows a task's keys"
                ],
            )
        )
    else:
        out.append(Section("task", _ABOUT["task"], [name_doc]))
        for name, cls in registry.items():
            doc = sys.modules[cls.__module__].__doc__ or cls.__doc__ or ""
            out.append(
                Section(
                    f"task.name={name}",
                    first_sentences(doc.split("\n\n")[0]).rstrip("."),
                    dataclass_keys(cls, "task.", skip=("name",)),
                )
            )
    stage_sets = {k.rsplit(".", 1)[-1] for k in values if k.startswith("stages.")}
    wanted = {k[9:] for k in values if k.startswith("training.")} | stage_sets
    for section, cls in SECTION_CLASSES.items():
        if section == "model":
            out.append(Section("model", _ABOUT["model"], _with_values(dataclass_keys(cls, "model."), values)))
            training = _with_values(training_keys(every, wanted), values)
            hidden = len(training_keys(True)) - len(training)
            notes = (
                [f"{hidden} more TrainingArguments keys, for distributed training, integrations and more: --help-all"]
                if hidden
                else []
            )
            out.append(Section("training", _ABOUT["training"], training, notes))
        else:
            about = _ABOUT.get(section) or first_sentences((cls.__doc__ or "").split("\n\n")[0]).rstrip(".")
            out.append(Section(section, about, _with_values(dataclass_keys(cls, f"{section}."), values)))
    out += stage_sections(nested, values)
    return out


def stage_sections(nested: dict[str, Any], values: dict[str, Any]) -> list[Section]:
    """One section per stage of the recipe (or a generic ``stages.<name>`` one): its stage keys, then the
    training keys it overrides, each with the run's value it replaces as the default."""
    names = [s["name"] for s in nested.get("stages") or [] if isinstance(s, dict) and isinstance(s.get("name"), str)]
    training_defaults = {**TRAINING_DEFAULTS, **(nested.get("training") or {})}
    docs = {k.key[9:]: k for k in training_keys(True)}
    out = []
    for name in names or ["<name>"]:
        prefix = f"stages.{name}."
        keys = dataclass_keys(StageArguments, prefix, skip=("name", "training"))
        keys = [k for k in keys if k.key[len(prefix) :] in STAGE_FIELDS]
        for key in [k[len(prefix) :] for k in values if k.startswith(prefix) and k[len(prefix) :] in docs]:
            doc = docs[key]
            default, label = doc.default, doc.default_label
            if key in training_defaults:
                default, label = training_defaults[key], f"training.{key}"
            keys.append(dataclasses.replace(doc, key=prefix + key, default=default, default_label=label))
        about = (
            "one training stage; a recipe lists its stages in order, each with a name"
            if not names
            else f"stage {names.index(name) + 1} of {len(names)}"
        )
        notes = [f"any training key applies to this stage only as --{prefix}<key>, e.g. --{prefix}max_steps=100"]
        out.append(Section(f"stages.{name}", about, _with_values(keys, values), notes))
    return out


# ------------------------------------------------------------------------------------ display


def show(value: Any) -> str:
    """A value as a recipe writes it: null, true, 0.001, [x2t, x2f], {pretrain: 0.5}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return show(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show(k)}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    return repr(value)


def metavar(doc: KeyDoc) -> str:
    """A short type for the key's line: INT, FLOAT, BOOL, TEXT, A,B,..., {K: V} or {a,b,c}."""
    if doc.choices and len(doc.choices) <= 8:
        return "{" + ",".join(show(c) for c in doc.choices) + "}"
    members = [m for m in _members(doc.annotation) if m is not type(None)]
    origins = [typing.get_origin(m) or m for m in members]
    if list in origins:
        return "A,B,..."
    if dict in origins:
        return "{K: V}"
    if doc.choices:
        return "NAME"
    names = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}
    return names.get(members[0], "VALUE") if members else "VALUE"


def _same(a: Any, b: Any) -> bool:
    """Equal as a recipe writes them (1 and 1.0, an Enum and its value)."""
    return show(a) == show(b)


def changed(doc: KeyDoc) -> bool:
    """The recipe sets the key to something other than its default."""
    return doc.value is not _NOTHING and (doc.default is _NOTHING or not _same(doc.value, doc.default))


def key_text(doc: KeyDoc, width: int = 100) -> str:
    """A key's help: ``--key TYPE`` (``*`` when the recipe changes it), then its description, choices,
    default and the recipe's value."""
    mark = CHANGED if changed(doc) else " "
    facts = []
    if doc.choices and len(doc.choices) > 8:
        facts.append("choices: " + ", ".join(show(c) for c in doc.choices) + ".")
    default = "required" if doc.default is _NOTHING else f"{doc.default_label}: {show(doc.default)}"
    if doc.value is not _NOTHING:
        facts.append(f"[recipe: {show(doc.value)}; {default}]")
    else:
        facts.append(f"[{default}]")
    body = " ".join(x for x in [doc.help, *facts] if x)
    lines = [f"{mark} --{doc.key} {metavar(doc)}"]
    lines += textwrap.wrap(body, width, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    return "\n".join(lines)


def usage(prog: str = "iml_hf.train") -> str:
    """The usage line and the examples (what a bare ``python -m iml_hf.train`` prints)."""
    about = (
        "Run an IML recipe: build the task's corpus, train its stages in order, measure, and write "
        "results.json. Every recipe key can be overridden as --key=value."
    )
    if prog != "iml_hf.train":  # another command that reads a recipe (iml_hf.push_corpus): its own usage first
        return f"usage: python -m {prog} [OPTIONS] RECIPE.yaml [--key=value ...] [-h | --help-all] [--version]"
    lines = [
        f"usage: python -m {prog} RECIPE.yaml [--key=value ...] [--quiet] [-h | --help-all] [--version]",
        "",
        *textwrap.wrap(about, 100),
        "",
        "examples:",
    ]
    for command, what in EXAMPLES:
        lines.append(f"  {command}")
        lines.append(f"      {what}")
    return "\n".join(lines)


def format_help(
    nested: dict[str, Any] | None = None, source: str | None = None, prog: str = "iml_hf.train", every: bool = False
) -> str:
    """The whole help: usage, examples, general options, then every section's keys."""
    lines = [usage(prog), "", "general options:"]
    lines += [f"  {flag:<16}{what}" for flag, what in GENERAL_OPTIONS]
    lines += ["", *textwrap.wrap(VALUE_SYNTAX.replace("`", ""), 100, break_on_hyphens=False)]
    if source:
        lines += ["", f"Keys of {source} ({CHANGED} marks a key whose value there differs from its default):"]
    else:
        lines += ["", "Recipe keys (give a recipe to see its values):"]
    for section in sections(nested, every):
        lines += ["", f"{section.title}: {section.about}"]
        lines += [key_text(doc) for doc in section.keys]
        lines += [f"  ({note})" for note in section.notes]
    return "\n".join(lines)


def handle_info_flags(path: str | None, rest: list[str], prog: str) -> None:
    """``--version``, ``--help``/``--help-all`` and a bare command: print what was asked and exit (0; 2 for
    a bare command, with the usage on stderr, as argparse does for a missing argument)."""
    if "--version" in rest:
        print(f"iml_hf {__version__}")
        raise SystemExit(0)
    every = "--help-all" in rest
    if every or {"-h", "--help"} & set(rest):
        from iml_hf.config.recipe_files import load_yaml

        nested = load_yaml(path) if path else {}
        for i, arg in enumerate(rest):  # --task.name=NAME --help: that task's keys
            name = (
                arg.split("=", 1)[1]
                if arg.startswith("--task.name=")
                else rest[i + 1]
                if arg == "--task.name" and i + 1 < len(rest)
                else None
            )
            if name is not None:
                nested["task"] = {**(nested.get("task") or {}), "name": name}
        print(format_help(nested, path, prog, every))
        raise SystemExit(0)
    if path is None and not rest:
        print(
            usage(prog) + f"\n\nerror: give a recipe (e.g. recipes/toy.yaml); python -m {prog} --help lists every key",
            file=sys.stderr,
        )
        raise SystemExit(2)


# ------------------------------------------------------------------------------------ markdown


def _cell(text: str) -> str:
    """Plain text for a Markdown table cell (``<output_dir>`` must not read as an HTML tag)."""
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _code_flags(text: str) -> str:
    """``--key=value`` flags in a Markdown sentence as code."""
    return re.sub(r"(--[\w.<>=-]+)", r"`\1`", text)


def _table(keys: list[KeyDoc]) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for doc in keys:
        default = "required" if doc.default is _NOTHING else f"`{show(doc.default)}`"
        kind = (
            describe(doc.annotation) if not doc.choices else "one of " + ", ".join(f"`{show(c)}`" for c in doc.choices)
        )
        rows.append(f"| `{doc.key}` | {_cell(kind)} | {_cell(default)} | {_cell(doc.help)} |")
    return rows


def markdown() -> str:
    """docs/recipe-keys.md: every recipe key of every section and task, with type, default and description."""
    lines = [
        "# Recipe keys",
        "",
        "<!-- Generated by `python -m iml_hf.config.help --markdown > docs/recipe-keys.md` from the field "
        "descriptions of the argument dataclasses (the same text `--help` shows); do not edit by hand: "
        "tests/test_help.py fails when this file is out of date. -->",
        "",
        "Every key below can be set in a recipe (YAML, nested by section) or on the command line as "
        "`--section.key=value`; `python -m iml_hf.train RECIPE --help` shows a recipe's values beside "
        "the defaults.",
        "",
        VALUE_SYNTAX,
        "",
    ]
    for section in sections(None, every=False):
        if section.title == "training":
            common = [k for k in section.keys]
            rest = [k for k in training_keys(True) if k.key not in {c.key for c in common}]
            lines += [
                "## training",
                "",
                _cell(_ABOUT["training"]) + ". The common keys:",
                "",
                *_table(common),
                "",
                "### Other TrainingArguments keys",
                "",
                "Shown by `--help-all`; descriptions are transformers' (first sentence).",
                "",
                *_table(rest),
                "",
                "Never recipe keys: " + "; ".join(f"`{k}` ({why})" for k, why in HIDDEN_TRAINING_KEYS.items()) + ".",
                "",
            ]
            continue
        title = f"`{section.title}`" if "<" in section.title else section.title
        lines += [
            f"## {title}",
            "",
            _cell(section.about[:1].upper() + section.about[1:]) + ".",
            "",
            *_table(section.keys),
            "",
        ]
        lines += [_code_flags(f"{note[:1].upper() + note[1:]}.") for note in section.notes]
        lines += [""] if section.notes else []
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m iml_hf.config.help --markdown`` prints the reference; ``--help-all`` the full help."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    print("usage: python -m iml_hf.config.help --markdown > docs/recipe-keys.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
