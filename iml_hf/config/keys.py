"""Which keys a recipe has, and their types: the schema the parser checks every key against.

A recipe is sections of dotted keys (``model.num_layers``, ``training.learning_rate``,
``stages.x1.max_steps``); which exist depends on the task (its ``task.*`` keys) and on the stages
(their ``stages.<name>.*`` keys). Types come from the dataclasses of :mod:`iml_hf.config.args`, the
task's, the measurements' and, for training keys, ``TrainingArguments``' own fields, read without
importing transformers (:mod:`iml_hf.config.training_fields`).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from iml_hf.config.args import STAGE_FIELDS, EvalArguments, ModelArguments, RunArguments, StageArguments
from iml_hf.config.measurement_args import MEASUREMENT_ARGUMENTS
from iml_hf.config.training_fields import training_field_types
from iml_hf.config.validation import RecipeError, check_stages, invalid, suggest
from iml_hf.tasks import task_registry

#: The recipe's sections (mappings of keys); every other top-level key is a RunArguments field.
SECTIONS = ("task", "model", "training", "evaluation", *MEASUREMENT_ARGUMENTS)
#: Sections whose keys are the fields of a dataclass (every measurement's section among them).
SECTION_CLASSES = {
    "model": ModelArguments,
    "evaluation": EvalArguments,
    **MEASUREMENT_ARGUMENTS,
}
#: TrainingArguments fields the pipeline sets itself.
RESERVED_TRAINING_KEYS = ("output_dir", "seed")
#: Toolkit defaults for every stage's TrainingArguments (recipes override them).
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 100,
}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's init fields -> their types (annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _training_fields() -> dict[str, Any]:
    return {k: v for k, v in training_field_types().items() if k not in RESERVED_TRAINING_KEYS}


def _stage_fields() -> dict[str, Any]:
    return {k: v for k, v in field_types(StageArguments).items() if k in STAGE_FIELDS and k != "name"}


def fail_unknown(key: str, valid: list[str], where: str) -> None:
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


def key_types(recipe: dict[str, Any], where: str = "in the recipe") -> dict[str, Any]:
    """Every valid dotted key for this recipe -> its type."""
    _check_shape(recipe, where)
    registry = task_registry()
    task_name = (recipe.get("task") or {}).get("name")
    schema = dict(field_types(RunArguments))
    if task_name is None:
        raise RecipeError(f"the recipe needs task.name; available tasks: {sorted(registry)}")
    if task_name not in registry:
        raise RecipeError(
            f"task.name={task_name!r} is unknown{suggest(task_name, sorted(registry))} "
            f"(available tasks: {sorted(registry)})"
        )
    schema.update({f"task.{k}": t for k, t in field_types(registry[task_name]).items()})
    for section, cls in SECTION_CLASSES.items():
        schema.update({f"{section}.{k}": t for k, t in field_types(cls).items()})
    training = _training_fields()
    schema.update({f"training.{k}": t for k, t in training.items()})
    for stage in recipe.get("stages") or []:
        schema.update({f"stages.{stage['name']}.{k}": t for k, t in {**_stage_fields(), **training}.items()})
    return schema


def flatten(recipe: dict[str, Any], where: str, origins: dict[str, str] | None = None) -> dict[str, Any]:
    """Nested recipe -> {dotted key: value}, checking every key against the schema (an unknown key's
    error names its line when ``origins`` knows it)."""
    schema = key_types(recipe, where)
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
            fail_unknown(key, valid, at)
    return flat


def unflatten(flat: dict[str, Any], stage_order: list[str]) -> dict[str, Any]:
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
