"""Recipe parser: YAML file + ``--key=value`` command line -> validated run objects.

Precedence is dataclass default < recipe < command line (TRL's ``TrlParser`` habit: the YAML
becomes the defaults of an argparse parser, so overrides and ``--help`` work). Keys are dotted
paths: ``seed``, ``task.modulus``, ``model.num_layers``, ``training.learning_rate``,
``evaluation.eval_steps`` and, for a stage named ``x1``, ``stages.x1.max_steps``. A key that does
not exist is an error naming the closest valid one.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainingArguments

from iml_hf.args import CHECKPOINT_KEYS, FROM_SCRATCH_KEYS, STAGE_FIELDS, EvalArguments, ModelArguments, RunArguments, StageArguments
from iml_hf.hub import check_hub_keys, check_hub_repo_id
from iml_hf.measurements import MEASUREMENTS
from iml_hf.resolved import configuration, flatten_resolved  # noqa: F401  (re-exported)
from iml_hf.tasks import Task, make_task, task_registry, valid_eval_sets

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
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class RecipeError(ValueError):
    """A recipe or command line that cannot be run; the message says what to change."""


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

    def training_arguments(self, stage: StageArguments, output_dir: str | None = None) -> TrainingArguments:
        """The stage's TrainingArguments: toolkit defaults < recipe ``training`` < stage overrides."""
        values = {**TRAINING_DEFAULTS, **machine_defaults(), **self.training, **stage.training}
        values["output_dir"] = output_dir or str(Path(self.run.output_dir) / "checkpoints" / stage.name)
        values["seed"] = self.run.seed
        return TrainingArguments(**values)


def _field_names(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls) if f.init}


def _training_fields() -> dict[str, str]:
    return {k: v for k, v in _field_names(TrainingArguments).items() if k not in RESERVED_TRAINING_KEYS}


def _coerce(value: Any, type_name: str) -> Any:
    """YAML reads ``2e-5`` as a string; turn numeric strings into numbers where a number is expected."""
    if isinstance(value, str) and _NUMBER.match(value) and ("float" in type_name or "int" in type_name):
        number = float(value)
        return int(number) if "float" not in type_name and number.is_integer() else number
    return value


def _suggest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
    return f"; did you mean '{match[0]}'?" if match else ""


def _fail_unknown(key: str, valid: list[str], where: str) -> None:
    raise RecipeError(f"unknown key '{key}' {where}{_suggest(key, valid)}")


def _schema(recipe: dict[str, Any]) -> dict[str, str]:
    """Every valid dotted key for this recipe -> its type name."""
    registry = task_registry()
    task_name = (recipe.get("task") or {}).get("name")
    schema = {k: t for k, t in _field_names(RunArguments).items()}
    if task_name is None:
        raise RecipeError(f"the recipe needs task.name; available tasks: {sorted(registry)}")
    if task_name not in registry:
        raise RecipeError(
            f"task.name={task_name!r} is unknown{_suggest(task_name, sorted(registry))} "
            f"(available tasks: {sorted(registry)})"
        )
    schema.update({f"task.{k}": t for k, t in _field_names(registry[task_name]).items()})
    for section, cls in SECTION_CLASSES.items():
        schema.update({f"{section}.{k}": t for k, t in _field_names(cls).items()})
    training = _training_fields()
    schema.update({f"training.{k}": t for k, t in training.items()})
    for stage in recipe.get("stages") or []:
        name = stage.get("name")
        stage_fields = {"train_subsets": "list", "train_kinds": "list", "replay": "dict", "reset_optimizer": "bool", **training}
        schema.update({f"stages.{name}.{k}": t for k, t in stage_fields.items()})
    return schema


def _flatten(recipe: dict[str, Any], where: str) -> dict[str, Any]:
    """Nested recipe -> {dotted key: value}, checking every key against the schema."""
    schema = _schema(recipe)
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        if key == "stages":
            if not isinstance(value, list):
                raise RecipeError(f"'stages' must be a list of stages {where}")
            names = [s.get("name") if isinstance(s, dict) else None for s in value]
            if None in names or len(set(names)) != len(names):
                raise RecipeError(f"every stage needs a unique 'name' {where}; got {names}")
            for stage in value:
                for k, v in stage.items():
                    if k != "name":
                        flat[f"stages.{stage['name']}.{k}"] = v
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise RecipeError(f"'{key}' must be a mapping {where}")
            for k, v in value.items():
                flat[f"{key}.{k}"] = v
        else:
            flat[key] = value
    valid = sorted(schema)
    for key in flat:
        if key not in schema:
            _fail_unknown(key, valid, where)
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
                _merge(inherited[stage["name"]], stage) if isinstance(stage, dict) and stage.get("name") in inherited
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


def load_yaml(path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a recipe file; an unreadable or non-mapping file is a RecipeError. A ``base:`` key
    names a recipe (relative to this file) that this one extends, stating only what differs."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path!r} does not exist") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe file {path!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path!r} must hold a mapping of keys")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = str(Path(path).parent / base)
    if Path(base_path).resolve().as_posix() in _seen:
        raise RecipeError(f"recipe {path!r}: 'base: {base}' makes a cycle")
    return _merge(load_yaml(base_path, (*_seen, Path(path).resolve().as_posix())), data)


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


def _overrides(argv: list[str], schema: dict[str, str], prog: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run an IML recipe. Every recipe key can be overridden as --key=value.",
        allow_abbrev=False,
    )
    parser.add_argument("config", nargs="?", help="recipe YAML (or --config PATH)")
    for key in sorted(schema):
        parser.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS, metavar=schema[key].split(" ")[0])
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        name = flag[2:].split("=", 1)[0]
        match = difflib.get_close_matches(name, sorted(schema), n=1, cutoff=0.4)
        hint = f"; did you mean '--{match[0]}'?" if match else ""
        raise RecipeError(f"unknown argument '{flag}'{hint}")
    values = {k: v for k, v in vars(known).items() if k != "config"}
    return {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in values.items()}


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


def build_recipe(nested: dict[str, Any], source: str | None = None) -> Recipe:
    """Validate a nested recipe mapping into a Recipe (all errors are RecipeError)."""
    where = f"in {source}" if source else "in the recipe"
    flat = _flatten(nested, where)
    schema = _schema(nested)
    flat = {k: _coerce(v, schema[k]) for k, v in flat.items()}
    nested = _unflatten(flat, [s["name"] for s in nested.get("stages") or []])
    try:
        run = RunArguments(**{k: v for k, v in nested.items() if k not in SECTIONS and k != "stages"})
        task = make_task(nested.get("task") or {})
        model = ModelArguments(**nested.get("model", {}))
        evaluation = EvalArguments(**nested.get("evaluation", {}))
        measurements = {name: spec.arguments(**nested.get(name, {})) for name, spec in MEASUREMENTS.items()}
        alignment, layers = measurements["gradient_alignment"], measurements["layer_analysis"]
        training = dict(nested.get("training", {}))
        stages = []
        for stage in nested["stages"]:
            overrides = {k: v for k, v in stage.items() if k not in STAGE_FIELDS}
            stages.append(
                StageArguments(**{k: v for k, v in stage.items() if k in STAGE_FIELDS}, training=overrides)
            )
        check_hub_keys(run, training, stages)  # e.g. training.push_to_hub: the run is pushed once, at the end
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{error} ({where})") from None
    if not stages:
        raise RecipeError(f"no stages are defined {where}; add a 'stages:' list")
    given = set(nested.get("model", {}))
    if model.model_name_or_path is None and given & set(CHECKPOINT_KEYS):
        key = sorted(given & set(CHECKPOINT_KEYS))[0]
        raise RecipeError(f"model.{key} only applies to a checkpoint; set model.model_name_or_path or remove it ({where})")
    scratch = sorted(given & set(FROM_SCRATCH_KEYS))
    if model.model_name_or_path is not None and scratch:
        raise RecipeError(
            f"model.{scratch[0]} describes a model built from scratch, but model.model_name_or_path="
            f"{model.model_name_or_path!r} loads a checkpoint whose config fixes it; remove "
            f"{', '.join('model.' + k for k in scratch)} ({where})"
        )
    for stage in stages:
        for subset in [*stage.train_subsets, *stage.replay]:
            if subset not in task.subsets:
                raise RecipeError(
                    f"stage {stage.name!r} names subset {subset!r}, which task {task.name!r} does not have"
                    f"{_suggest(subset, list(task.subsets))} (subsets: {list(task.subsets)})"
                )
    for subset in evaluation.subsets or []:
        if subset not in valid_eval_sets(task):
            raise RecipeError(f"evaluation.subsets names {subset!r}{_suggest(subset, valid_eval_sets(task))}")
    for subset in alignment.subsets or []:
        if subset not in task.subsets:
            raise RecipeError(f"gradient_alignment.subsets names {subset!r}{_suggest(subset, list(task.subsets))}")
    if layers.split not in ("train", "test"):
        raise RecipeError(f"layer_analysis.split={layers.split!r}; use 'train' or 'test'")
    recipe = Recipe(run, task, model, evaluation, training, stages, measurements=measurements, source=source)
    try:
        check_hub_repo_id(recipe)  # the default repo id is the run name, known once the recipe is
    except ValueError as error:
        raise RecipeError(f"{error} ({where})") from None
    for stage in stages:
        try:
            recipe.training_arguments(stage)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"stage {stage.name!r}: invalid training arguments: {error}") from None
    recipe.resolved = {
        **dataclasses.asdict(run),
        "task": dataclasses.asdict(task),
        "model": {k: v for k, v in dataclasses.asdict(model).items()  # a checkpoint's config fixes its sizes
                  if not (model.model_name_or_path and k in FROM_SCRATCH_KEYS)},
        "evaluation": dataclasses.asdict(evaluation),
        **{name: dataclasses.asdict(args) for name, args in measurements.items()},
        "training": {**TRAINING_DEFAULTS, **training},
        "stages": [
            {"name": s.name, "train_subsets": s.train_subsets, "train_kinds": s.train_kinds, "replay": s.replay,
             "reset_optimizer": s.reset_optimizer, **s.training}
            for s in stages
        ],
    }
    return recipe


def parse_recipe(argv: list[str], prog: str = "iml_hf.train") -> Recipe:
    """Parse ``RECIPE.yaml [--key=value ...]`` (or ``--config RECIPE.yaml``) into a Recipe."""
    path, rest = _split_config(argv)
    nested = load_yaml(path) if path else {}
    task = nested.setdefault("task", {}) if isinstance(nested.get("task", {}), dict) else {}
    for i, arg in enumerate(rest):  # the task decides which task.* keys exist
        if arg.startswith("--task.name="):
            task["name"] = arg.split("=", 1)[1]
        elif arg == "--task.name" and i + 1 < len(rest):
            task["name"] = rest[i + 1]
    if "name" not in task and {"-h", "--help"} & set(rest):
        task["name"] = sorted(task_registry())[0]  # --help without a recipe: show a task's keys
    where = f"in {path}" if path else "on the command line"
    flat = _flatten(nested, where)  # recipe typos are reported before command-line ones
    overrides = _overrides(rest, _schema(nested), prog)
    if overrides.get("model.model_name_or_path") is not None:  # a checkpoint replaces the file's from-scratch model
        flat = {k: v for k, v in flat.items() if not (k.startswith("model.") and k[6:] in FROM_SCRATCH_KEYS)}
    flat.update(overrides)
    return build_recipe(_unflatten(flat, [s["name"] for s in nested.get("stages") or []]), path)
