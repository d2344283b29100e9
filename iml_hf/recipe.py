"""Recipe parser: YAML file + ``--key=value`` command line -> validated run objects.

Precedence is dataclass default < recipe < command line (TRL's ``TrlParser`` habit: the YAML
becomes the defaults of an argparse parser, so overrides and ``--help`` work). Keys are dotted
paths: ``seed``, ``task.modulus``, ``model.num_layers``, ``training.learning_rate``,
``evaluation.eval_steps`` and, for a stage named ``x1``, ``stages.x1.max_steps``. A key that does
not exist is an error naming the closest valid one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainingArguments

from iml_hf.args import (
    CHECKPOINT_KEYS,
    FROM_SCRATCH_KEYS,
    STAGE_FIELDS,
    EvalArguments,
    ModelArguments,
    RunArguments,
    StageArguments,
)
from iml_hf.branching import check_branches
from iml_hf.hub import check_hub_keys, check_hub_repo_id
from iml_hf.measurements import MEASUREMENTS
from iml_hf.tasks import Task, make_task, task_registry, valid_eval_sets
from iml_hf.validation import (  # noqa: F401  (RecipeError re-exported: the parser's error)
    RecipeError,
    check_sequence_lengths,
    check_stages,
    check_training_value,
    conform,
    conform_cli,
    invalid,
    suggest,
)

SECTIONS = ("task", "model", "training", "evaluation", *MEASUREMENTS)
#: Sections whose keys are the fields of a dataclass (every measurement's section among them).
SECTION_CLASSES = {
    "model": ModelArguments,
    "evaluation": EvalArguments,
    **{name: spec.arguments for name, spec in MEASUREMENTS.items()},
}
#: TrainingArguments fields the pipeline sets itself.
RESERVED_TRAINING_KEYS = ("output_dir", "seed")
#: Toolkit defaults for every stage's TrainingArguments (recipes override them).
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 100,
}


def machine_defaults() -> dict[str, Any]:
    """TrainingArguments defaults that depend on this machine; applied when a stage runs but kept
    out of the resolved recipe, so a run's recorded configuration is the same on any machine."""
    return {"dataloader_pin_memory": torch.cuda.is_available()}  # pinning only helps host-to-GPU copies


@dataclass
class Recipe:
    """Everything one run needs, fully resolved."""

    run: RunArguments
    task: Task
    model: ModelArguments
    evaluation: EvalArguments
    training: dict[str, Any]
    stages: list[StageArguments]
    measurements: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)

    def measurement_args(self, section: str) -> Any:
        """The arguments of the measurement ``section`` (its dataclass defaults if the recipe is silent)."""
        if section not in self.measurements:
            self.measurements[section] = MEASUREMENTS[section].arguments()
        return self.measurements[section]

    def __getattr__(self, name: str) -> Any:  # recipe.gradient_alignment etc.
        if name in MEASUREMENTS:
            return self.measurement_args(name)
        raise AttributeError(name)

    def check_sequence_lengths(self, tokenized: Any) -> None:
        """The tokenized corpus fits the model's positions (a RecipeError naming
        ``model.max_position_embeddings`` otherwise); checked once the corpus exists, before any
        file of the run is written."""
        check_sequence_lengths(self, tokenized)

    def training_arguments(self, stage: StageArguments, output_dir: str | None = None) -> TrainingArguments:
        """The stage's TrainingArguments: toolkit defaults < recipe ``training`` < stage overrides."""
        values = {**TRAINING_DEFAULTS, **machine_defaults(), **self.training, **stage.training}
        values["output_dir"] = output_dir or str(Path(self.run.output_dir) / "checkpoints" / stage.name)
        values["seed"] = self.run.seed
        return TrainingArguments(**values)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's init fields -> their types (annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _training_fields() -> dict[str, Any]:
    return {k: v for k, v in _field_types(TrainingArguments).items() if k not in RESERVED_TRAINING_KEYS}


def _stage_fields() -> dict[str, Any]:
    return {k: v for k, v in _field_types(StageArguments).items() if k in STAGE_FIELDS and k != "name"}


def _type_name(annotation: Any) -> str:
    """A short name for ``--help``: ``int``, ``float``, ``list[str]``, ``str | None``..."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _fail_unknown(key: str, valid: list[str], where: str) -> None:
    raise RecipeError(f"unknown key '{key}' {where}{suggest(str(key), valid)}")


def _check_shape(recipe: dict[str, Any], where: str) -> None:
    """The recipe's structure, before any key is looked at: sections are mappings, ``task.name`` a
    string, ``stages`` a list of uniquely named mappings."""
    for key in SECTIONS:
        if key in recipe and not isinstance(recipe[key], dict):
            raise invalid(key, recipe[key], f"a mapping of {key}.* keys ({where})")
    name = (recipe.get("task") or {}).get("name")
    if name is not None and not isinstance(name, str):
        raise invalid("task.name", name, f"a task name, one of {sorted(task_registry())} ({where})")
    check_stages(recipe.get("stages"), where)


def _schema(recipe: dict[str, Any], where: str = "in the recipe") -> dict[str, str]:
    """Every valid dotted key for this recipe -> its type name."""
    return {k: _type_name(t) for k, t in _key_types(recipe, where).items()}


def _key_types(recipe: dict[str, Any], where: str = "in the recipe") -> dict[str, Any]:
    """Every valid dotted key for this recipe -> its type."""
    _check_shape(recipe, where)
    registry = task_registry()
    task_name = (recipe.get("task") or {}).get("name")
    schema = dict(_field_types(RunArguments))
    if task_name is None:
        raise RecipeError(f"the recipe needs task.name; available tasks: {sorted(registry)}")
    if task_name not in registry:
        raise RecipeError(
            f"task.name={task_name!r} is unknown{suggest(task_name, sorted(registry))} "
            f"(available tasks: {sorted(registry)})"
        )
    schema.update({f"task.{k}": t for k, t in _field_types(registry[task_name]).items()})
    for section, cls in SECTION_CLASSES.items():
        schema.update({f"{section}.{k}": t for k, t in _field_types(cls).items()})
    training = _training_fields()
    schema.update({f"training.{k}": t for k, t in training.items()})
    for stage in recipe.get("stages") or []:
        schema.update({f"stages.{stage['name']}.{k}": t for k, t in {**_stage_fields(), **training}.items()})
    return schema


def _flatten(recipe: dict[str, Any], where: str, origins: dict[str, str] | None = None) -> dict[str, Any]:
    """Nested recipe -> {dotted key: value}, checking every key against the schema (an unknown key's
    error names its line when ``origins`` knows it)."""
    schema = _schema(recipe, where)
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        if key == "stages":
            for stage in value:
                for k, v in stage.items():
                    if k != "name":
                        flat[f"stages.{stage['name']}.{k}"] = v
        elif key in SECTIONS:
            for k, v in value.items():
                flat[f"{key}.{k}"] = v
        else:
            flat[str(key)] = value
    valid = sorted(schema)
    for key in flat:
        if key not in schema:
            reserved = key.rsplit(".", 1)[-1]
            at = (origins or {}).get(key, where)
            if key.startswith(("training.", "stages.")) and reserved in RESERVED_TRAINING_KEYS:
                raise RecipeError(
                    f"{key} cannot be set: the toolkit sets the TrainingArguments' {reserved} from "
                    f"the recipe's top-level '{reserved}' key; set that instead ({at})"
                )
            _fail_unknown(key, valid, at)
    return flat


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key; a child's ``stages`` list is the run's
    stages in order, each inheriting the keys of the base stage of the same name (so
    ``- name: knowledge`` alone keeps that stage as it is); anything else is replaced."""
    merged = dict(base)
    for key, value in child.items():
        if key == "stages" and isinstance(value, list) and isinstance(base.get("stages"), list):
            inherited = {s.get("name"): s for s in base["stages"] if isinstance(s, dict)}
            merged["stages"] = [
                _merge(inherited[stage["name"]], stage)
                if isinstance(stage, dict) and stage.get("name") in inherited
                else stage
                for stage in value
            ]
        elif key == "model" and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(_without_scratch_keys(base[key], value), value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def _without_scratch_keys(base_model: dict[str, Any], child_model: dict[str, Any]) -> dict[str, Any]:
    """A base's model section as a child inherits it: a child that names a checkpoint replaces the
    base's from-scratch description (architecture, sizes) instead of contradicting it."""
    if child_model.get("model_name_or_path") is None:
        return base_model
    return {k: v for k, v in base_model.items() if k not in FROM_SCRATCH_KEYS}


def load_yaml(path: str) -> dict[str, Any]:
    """Read a recipe file; an unreadable or non-mapping file is a RecipeError. A ``base:`` key
    names a recipe (relative to this file) that this one extends, stating only what differs."""
    return load_yaml_origins(path)[0]


def load_yaml_origins(path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`load_yaml`, and where each dotted key was set (``"in recipes/toy.yaml line 27"``; with
    ``base:``, the file that set the value), so an error can point at the line."""
    try:
        text = Path(path).read_text()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_duplicate_keys(node, path)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path!r} does not exist") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe file {path!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path!r} must hold a mapping of keys")
    origins = _key_lines(node, path)
    base = data.pop("base", None)
    if base is None:
        return data, origins
    base_path = str(Path(path).parent / base)
    if Path(base_path).resolve().as_posix() in _seen:
        raise RecipeError(f"recipe {path!r}: 'base: {base}' makes a cycle")
    base_data, base_origins = load_yaml_origins(base_path, (*_seen, Path(path).resolve().as_posix()))
    return _merge(base_data, data), {**base_origins, **origins}


def _key_lines(node: yaml.Node | None, path: str) -> dict[str, str]:
    """Dotted key -> ``"in <path> line <n>"`` for every key of a recipe file's node tree."""

    def at(key_node: yaml.Node) -> str:
        return f"in {path} line {key_node.start_mark.line + 1}"

    origins: dict[str, str] = {}
    for key_node, value_node in node.value if isinstance(node, yaml.MappingNode) else []:
        key = str(key_node.value)
        if key == "stages" and isinstance(value_node, yaml.SequenceNode):
            for item in value_node.value:
                pairs = item.value if isinstance(item, yaml.MappingNode) else []
                name = next((v.value for k, v in pairs if k.value == "name" and isinstance(v, yaml.ScalarNode)), None)
                origins.update({f"stages.{name}.{k.value}": at(k) for k, _ in pairs if name and k.value != "name"})
        elif key in SECTIONS and isinstance(value_node, yaml.MappingNode):
            origins.update({f"{key}.{k.value}": at(k) for k, _ in value_node.value})
        else:
            origins[key] = at(key_node)
    return origins


def _check_duplicate_keys(node: yaml.Node | None, path: str, where: str = "") -> None:
    """A key given twice in one mapping (YAML would silently keep the last) is an error naming the
    dotted key (``model.num_layers``, ``stages.x1.max_steps``) and both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{where}.{key}" if where else str(key)
            if key is not None and key in seen:
                raise RecipeError(
                    f"recipe file {path!r}: duplicate key '{dotted}' (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last, so give it once"
                )
            if key is not None:
                seen[key] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, path, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            name = None
            if isinstance(item, yaml.MappingNode):
                name = next(
                    (
                        v.value
                        for k, v in item.value
                        if getattr(k, "value", None) == "name" and isinstance(v, yaml.ScalarNode)
                    ),
                    None,
                )
            _check_duplicate_keys(item, path, f"{where}.{name}" if name else f"{where}[{i}]")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """The recipe path (first positional argument or ``--config``) and the remaining arguments."""
    rest = list(argv)
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            return rest[i + 1], rest[:i] + rest[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], rest[:i] + rest[i + 1 :]
    if rest and not rest[0].startswith("-"):
        return rest[0], rest[1:]
    return None, rest


def _overrides(argv: list[str], types: dict[str, Any], prog: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``--key=value`` arguments, each value read against its key's type, and where each came from
    (``"on the command line: --key=value"``). ``--help`` never reaches this parser
    (``iml_hf.cli_help.handle_info_flags`` answers it first)."""
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, add_help=False)
    parser.add_argument("config", nargs="?")
    for key in sorted(types):
        parser.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS)
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        name = flag[2:].split("=", 1)[0]
        match = difflib.get_close_matches(name, sorted(types), n=1, cutoff=0.4)
        hint = f"; did you mean '--{match[0]}'?" if match else ""
        raise RecipeError(f"unknown argument '{flag}'{hint}")
    values = {k: v for k, v in vars(known).items() if k != "config"}
    from iml_hf.provenance import redact  # an error message never shows a token's value

    origins = {k: f"on the command line: {redact([f'--{k}={v}'])[0]}" for k, v in values.items()}
    try:
        key = None
        conformed = {}
        for key, value in values.items():
            conformed[key] = conform_cli(key, value, types[key]) if isinstance(value, str) else value
    except RecipeError as error:
        raise RecipeError(f"{error} ({origins[key]})") from None
    return conformed, origins


def _unflatten(flat: dict[str, Any], stage_order: list[str]) -> dict[str, Any]:
    nested: dict[str, Any] = {"stages": [{"name": n} for n in stage_order]}
    stages = {s["name"]: s for s in nested["stages"]}
    for key, value in flat.items():
        parts = key.split(".")
        if parts[0] == "stages":
            stages[parts[1]][parts[2]] = value
        elif len(parts) == 2:
            nested.setdefault(parts[0], {})[parts[1]] = value
        else:
            nested[key] = value
    return nested


def located(message: str, origins: dict[str, str], where: str) -> str:
    """``message`` followed by where the value it is about was set: the first dotted key the message
    names that ``origins`` knows (``"in recipes/toy.yaml line 27"``, ``"on the command line:
    --model.num_layers=0"``), else ``where``."""
    found = []
    for key, origin in origins.items():
        for match in re.finditer(rf"(?<![\w.\-]){re.escape(key)}(?![\w.])", message):
            found.append((match.start(), -len(key), origin))
            break
    return f"{message} ({min(found)[2] if found else where})"


def build_recipe(nested: dict[str, Any], source: str | None = None, origins: dict[str, str] | None = None) -> Recipe:
    """Validate a nested recipe mapping into a Recipe (all errors are RecipeError). ``origins`` maps a
    dotted key to where its value was set, which an error about that key names."""
    where = f"in {source}" if source else "in the recipe"
    origins = origins or {}

    def at(message: str) -> RecipeError:
        return RecipeError(located(message, origins, where))

    flat = _flatten(nested, where, origins)
    types = _key_types(nested, where)
    try:
        flat = {k: conform(k, v, types[k]) for k, v in flat.items()}  # every value's type
        for key, value in flat.items():
            if key.startswith(("training.", "stages.")):
                check_training_value(key, value)  # TrainingArguments ranges; the dataclasses check their own
    except RecipeError as error:
        raise at(str(error)) from None
    for stage in nested.get("stages") or []:
        if "train_subsets" not in stage:
            subsets = list(task_registry()[nested["task"]["name"]].subsets)
            raise RecipeError(
                f"stages.{stage['name']}.train_subsets is missing: name the subsets the stage "
                f"trains on, some of {subsets} ({where})"
            )
    nested = _unflatten(flat, [s["name"] for s in nested.get("stages") or []])
    try:
        run = RunArguments(**{k: v for k, v in nested.items() if k not in SECTIONS and k != "stages"})
        task = make_task(nested.get("task") or {})
        model = ModelArguments(**nested.get("model", {}))
        if model.loss_on is None:  # the task's documented default (the authors' where it is theirs)
            model.loss_on = getattr(task, "default_loss", "answer")
        evaluation = EvalArguments(**nested.get("evaluation", {}))
        measurements = {name: spec.arguments(**nested.get(name, {})) for name, spec in MEASUREMENTS.items()}
        alignment, layers = measurements["gradient_alignment"], measurements["layer_analysis"]
        training = dict(nested.get("training", {}))
        stages = []
        for stage in nested["stages"]:
            overrides = {k: v for k, v in stage.items() if k not in STAGE_FIELDS}
            stages.append(StageArguments(**{k: v for k, v in stage.items() if k in STAGE_FIELDS}, training=overrides))
        check_hub_keys(run, training, stages)  # e.g. training.push_to_hub: the run is pushed once, at the end
    except (TypeError, ValueError) as error:
        raise at(str(error)) from None
    if not stages:
        raise RecipeError(f"no stages are defined {where}; add a 'stages:' list")
    for scope, values in [("training", training), *((f"stages.{s.name}", s.training) for s in stages)]:
        if "resume_from_checkpoint" in values:
            raise at(
                f"{scope}.resume_from_checkpoint is not used: rerunning the same command resumes a "
                f"killed run from its last checkpoint (every checkpoint_steps steps)"
            )
    given = set(nested.get("model", {}))
    if model.model_name_or_path is None and given & set(CHECKPOINT_KEYS):
        key = sorted(given & set(CHECKPOINT_KEYS))[0]
        raise at(f"model.{key} only applies to a checkpoint; set model.model_name_or_path or remove it")
    scratch = sorted(given & set(FROM_SCRATCH_KEYS))
    if model.model_name_or_path is not None and scratch:
        raise at(
            f"model.{scratch[0]} describes a model built from scratch, but model.model_name_or_path="
            f"{model.model_name_or_path!r} loads a checkpoint whose config fixes it; remove "
            f"{', '.join('model.' + k for k in scratch)}"
        )
    for stage in stages:
        for subset in [*stage.train_subsets, *stage.replay]:
            if subset not in task.subsets:
                raise at(
                    f"stages.{stage.name}.{'train_subsets' if subset in stage.train_subsets else 'replay'} names "
                    f"subset {subset!r}, which task {task.name!r} does not have"
                    f"{suggest(subset, list(task.subsets))} (subsets: {list(task.subsets)})"
                )
    for key in ("subsets", "extra_subsets"):
        for subset in getattr(evaluation, key) or []:
            if subset not in valid_eval_sets(task):
                raise at(f"evaluation.{key} names {subset!r}{suggest(subset, valid_eval_sets(task))}")
    for subset in alignment.subsets or []:
        if subset not in task.subsets:
            raise at(f"gradient_alignment.subsets names {subset!r}{suggest(subset, list(task.subsets))}")
    for subset in measurements["probes"].subsets or []:
        if subset not in task.subsets:
            raise at(
                f"probes.subsets names {subset!r}{suggest(subset, list(task.subsets))} (subsets: {list(task.subsets)})"
            )
    if layers.split not in ("train", "test"):
        raise at(f"layer_analysis.split={layers.split!r}; use 'train' or 'test'")
    recipe = Recipe(run, task, model, evaluation, training, stages, measurements=measurements, source=source)
    check_branches(recipe, where)
    try:
        check_hub_repo_id(recipe)  # the default repo id is the run name, known once the recipe is
    except ValueError as error:
        raise at(str(error)) from None
    for stage in stages:
        try:
            recipe.training_arguments(stage)
        except (TypeError, ValueError) as error:
            raise at(f"stage {stage.name!r}: invalid training arguments: {error}") from None
    recipe.resolved = {
        **dataclasses.asdict(run),
        "task": dataclasses.asdict(task),
        "model": {
            k: v
            for k, v in dataclasses.asdict(model).items()  # a checkpoint's config fixes its sizes
            if not (model.model_name_or_path and k in FROM_SCRATCH_KEYS)
        },
        "evaluation": dataclasses.asdict(evaluation),
        **{name: dataclasses.asdict(args) for name, args in measurements.items()},
        "training": {**TRAINING_DEFAULTS, **training},
        "stages": [
            {
                "name": s.name,
                "train_subsets": s.train_subsets,
                "train_kinds": s.train_kinds,
                "replay": s.replay,
                "reset_optimizer": s.reset_optimizer,
                **s.training,
            }
            for s in stages
        ],
    }
    return recipe


def parse_recipe(argv: list[str], prog: str = "iml_hf.train") -> Recipe:
    """Parse ``RECIPE.yaml [--key=value ...]`` (or ``--config RECIPE.yaml``) into a Recipe.

    ``--help``, ``--help-all`` and ``--version`` print and exit (``SystemExit(0)``), and so does a bare
    command (the usage, ``SystemExit(2)``): this is the command line's parser; :func:`iml_hf.load_recipe`
    is the Python one."""
    path, rest = _split_config(argv)
    if path is None and not rest or {"-h", "--help", "--help-all", "--version"} & set(rest):
        from iml_hf.cli_help import handle_info_flags

        handle_info_flags(path, rest, prog)
    nested, origins = load_yaml_origins(path) if path else ({}, {})
    task = nested.setdefault("task", {}) if isinstance(nested.get("task", {}), dict) else {}
    for i, arg in enumerate(rest):  # the task decides which task.* keys exist
        if arg.startswith("--task.name="):
            task["name"] = arg.split("=", 1)[1]
        elif arg == "--task.name" and i + 1 < len(rest):
            task["name"] = rest[i + 1]
    where = f"in {path}" if path else "on the command line"
    flat = _flatten(nested, where, origins)  # recipe typos are reported before command-line ones
    overrides, given = _overrides(rest, _key_types(nested, where), prog)
    return _with_overrides(nested, flat, overrides, path, {**origins, **given})


def recipe_from(
    nested: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    origins: dict[str, str] | None = None,
) -> Recipe:
    """``nested`` (a recipe mapping, as :func:`load_yaml` reads it) with ``overrides`` (``{dotted key:
    Python value}``) on top, validated: the Python API's parser (values are not read as YAML)."""
    nested, overrides = copy.deepcopy(nested), dict(overrides or {})
    if "task.name" in overrides and isinstance(nested.get("task", {}), dict):  # the task decides the task.* keys
        nested.setdefault("task", {})["name"] = overrides["task.name"]
    where = f"in {source}" if source else "in the recipe"
    flat = _flatten(nested, where, origins)
    types = _key_types(nested, where)
    for key in overrides:
        if key not in types:
            _fail_unknown(key, sorted(types), "in the overrides")
    given = {k: f"in the overrides: {k}={v!r}" for k, v in overrides.items()}
    return _with_overrides(nested, flat, overrides, source, {**(origins or {}), **given})


def _with_overrides(
    nested: dict[str, Any], flat: dict[str, Any], overrides: dict[str, Any], source: str | None, origins: dict[str, str]
) -> Recipe:
    """The recipe ``flat`` (checked dotted keys of ``nested``) with ``overrides`` on top, built."""
    if overrides.get("model.model_name_or_path") is not None:  # a checkpoint replaces the file's from-scratch model
        flat = {k: v for k, v in flat.items() if not (k.startswith("model.") and k[6:] in FROM_SCRATCH_KEYS)}
    flat = {**flat, **overrides}
    return build_recipe(_unflatten(flat, [s["name"] for s in nested.get("stages") or []]), source, origins)
