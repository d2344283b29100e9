"""A validated run: the Recipe object, and how a nested recipe mapping becomes one.

:func:`build_recipe` checks a recipe in named steps (keys and types, the sections' dataclasses, what
the sections say about each other) without importing torch or transformers: the sweep and the report
read recipes too. The stages' ``TrainingArguments`` are built, and their own (partly machine-dependent)
checks run, by :meth:`Recipe.check_training_arguments`: a run (plain or branched) and a local sweep
call it before they write anything.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iml_hf.config.args import (
    CHECKPOINT_KEYS,
    FROM_SCRATCH_KEYS,
    STAGE_FIELDS,
    EvalArguments,
    ModelArguments,
    RunArguments,
    StageArguments,
)
from iml_hf.config.branches import check_branches
from iml_hf.config.hub_keys import check_hub_keys, check_hub_repo_id
from iml_hf.config.keys import (
    SECTIONS,
    TRAINING_DEFAULTS,
    fail_unknown,
    flatten,
    key_types,
    unflatten,
)
from iml_hf.config.measurement_args import MEASUREMENT_ARGUMENTS, check_measurements_against_task
from iml_hf.config.validation import (
    RecipeError,
    check_sequence_lengths,
    check_training_value,
    conform,
    suggest,
)
from iml_hf.tasks import Task, make_task, task_registry, valid_eval_sets

if TYPE_CHECKING:
    from transformers import TrainingArguments


def machine_defaults() -> dict[str, Any]:
    """TrainingArguments defaults that depend on this machine; applied when a stage runs but kept
    out of the resolved recipe, so a run's recorded configuration is the same on any machine."""
    import torch

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
    origins: dict[str, str] = field(default_factory=dict, repr=False)  # dotted key -> where it was set

    def measurement_args(self, section: str) -> Any:
        """The arguments of the measurement ``section`` (its dataclass defaults if the recipe is silent)."""
        if section not in self.measurements:
            self.measurements[section] = MEASUREMENT_ARGUMENTS[section]()
        return self.measurements[section]

    def __getattr__(self, name: str) -> Any:  # recipe.gradient_alignment etc.
        if name in MEASUREMENT_ARGUMENTS:
            return self.measurement_args(name)
        raise AttributeError(name)

    def check_sequence_lengths(self, tokenized: Any) -> None:
        """The tokenized corpus fits the model's positions (a RecipeError naming
        ``model.max_position_embeddings`` otherwise); checked once the corpus exists, before any
        file of the run is written."""
        check_sequence_lengths(self, tokenized)

    def training_arguments(self, stage: StageArguments, output_dir: str | None = None) -> TrainingArguments:
        """The stage's TrainingArguments: toolkit defaults < recipe ``training`` < stage overrides."""
        from transformers import TrainingArguments

        values = {**TRAINING_DEFAULTS, **machine_defaults(), **self.training, **stage.training}
        values["output_dir"] = output_dir or str(Path(self.run.output_dir) / "checkpoints" / stage.name)
        values["seed"] = self.run.seed
        return TrainingArguments(**values)

    def check_training_arguments(self) -> None:
        """Every stage's TrainingArguments can be built (their own cross-field checks pass); a
        RecipeError naming the stage otherwise. The run calls it before it writes anything."""
        where = f"in {self.source}" if self.source else "in the recipe"
        for stage in self.stages:
            try:
                self.training_arguments(stage)
            except (TypeError, ValueError) as error:
                message = f"stage {stage.name!r}: invalid training arguments: {error}"
                raise RecipeError(located(message, self.origins, where)) from None


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

    flat = _checked_values(nested, where, origins, at)
    _require_train_subsets(nested, where)
    recipe = _sections(unflatten(flat, [s["name"] for s in nested.get("stages") or []]), where, at)
    recipe.source, recipe.origins = source, origins
    _check_combinations(recipe, set(nested.get("model") or {}), at)
    check_branches(recipe, where)
    try:
        check_hub_repo_id(recipe)  # the default repo id is the run name, known once the recipe is
    except ValueError as error:
        raise at(str(error)) from None
    recipe.resolved = resolved_tree(recipe)
    return recipe


def _checked_values(
    nested: dict[str, Any], where: str, origins: dict[str, str], at: Callable[[str], RecipeError]
) -> dict[str, Any]:
    """``{dotted key: value}``: every key known, every value of its key's type, training values in range."""
    flat = flatten(nested, where, origins)
    types = key_types(nested, where)
    try:
        flat = {k: conform(k, v, types[k]) for k, v in flat.items()}
        for key, value in flat.items():
            if key.startswith(("training.", "stages.")):
                check_training_value(key, value)  # TrainingArguments ranges; the dataclasses check their own
    except RecipeError as error:
        raise at(str(error)) from None
    return flat


def _require_train_subsets(nested: dict[str, Any], where: str) -> None:
    for stage in nested.get("stages") or []:
        if "train_subsets" not in stage:
            subsets = list(task_registry()[nested["task"]["name"]].subsets)
            raise RecipeError(
                f"stages.{stage['name']}.train_subsets is missing: name the subsets the stage "
                f"trains on, some of {subsets} ({where})"
            )


def _sections(nested: dict[str, Any], where: str, at: Callable[[str], RecipeError]) -> Recipe:
    """The recipe's sections as their dataclasses, each checking its own values."""
    try:
        run = RunArguments(**{k: v for k, v in nested.items() if k not in SECTIONS and k != "stages"})
        task = make_task(nested.get("task") or {})
        model = ModelArguments(**nested.get("model", {}))
        if model.loss_on is None:  # the task's documented default (the authors' where it is theirs)
            model.loss_on = getattr(task, "default_loss", "answer")
        evaluation = EvalArguments(**nested.get("evaluation", {}))
        measurements = {name: cls(**nested.get(name, {})) for name, cls in MEASUREMENT_ARGUMENTS.items()}
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
    return Recipe(run, task, model, evaluation, training, stages, measurements=measurements)


def _check_combinations(recipe: Recipe, model_keys: set[str], at: Callable[[str], RecipeError]) -> None:
    """What the sections say about each other: no resume key, checkpoint and from-scratch model keys
    apart, and every subset a stage, the evaluation or a measurement names is the task's."""
    task, model = recipe.task, recipe.model
    for scope, values in [("training", recipe.training), *((f"stages.{s.name}", s.training) for s in recipe.stages)]:
        if "resume_from_checkpoint" in values:
            raise at(
                f"{scope}.resume_from_checkpoint is not used: rerunning the same command resumes a "
                f"killed run from its last checkpoint (every checkpoint_steps steps)"
            )
    if model.model_name_or_path is None and model_keys & set(CHECKPOINT_KEYS):
        key = sorted(model_keys & set(CHECKPOINT_KEYS))[0]
        raise at(f"model.{key} only applies to a checkpoint; set model.model_name_or_path or remove it")
    scratch = sorted(model_keys & set(FROM_SCRATCH_KEYS))
    if model.model_name_or_path is not None and scratch:
        raise at(
            f"model.{scratch[0]} describes a model built from scratch, but model.model_name_or_path="
            f"{model.model_name_or_path!r} loads a checkpoint whose config fixes it; remove "
            f"{', '.join('model.' + k for k in scratch)}"
        )
    for stage in recipe.stages:
        for subset in [*stage.train_subsets, *stage.replay]:
            if subset not in task.subsets:
                raise at(
                    f"stages.{stage.name}.{'train_subsets' if subset in stage.train_subsets else 'replay'} names "
                    f"subset {subset!r}, which task {task.name!r} does not have"
                    f"{suggest(subset, list(task.subsets))} (subsets: {list(task.subsets)})"
                )
    for key in ("subsets", "extra_subsets"):
        for subset in getattr(recipe.evaluation, key) or []:
            if subset not in valid_eval_sets(task):
                raise at(f"evaluation.{key} names {subset!r}{suggest(subset, valid_eval_sets(task))}")
    try:
        check_measurements_against_task(recipe.measurements, task)
    except ValueError as error:
        raise at(str(error)) from None


def resolved_tree(recipe: Recipe) -> dict[str, Any]:
    """The recipe as results.json records it: every section's values, defaults included (a
    checkpoint's model keeps no from-scratch sizes: its config fixes them)."""
    model = recipe.model
    return {
        **dataclasses.asdict(recipe.run),
        "task": dataclasses.asdict(recipe.task),
        "model": {
            k: v
            for k, v in dataclasses.asdict(model).items()
            if not (model.model_name_or_path and k in FROM_SCRATCH_KEYS)
        },
        "evaluation": dataclasses.asdict(recipe.evaluation),
        **{name: dataclasses.asdict(args) for name, args in recipe.measurements.items()},
        "training": {**TRAINING_DEFAULTS, **recipe.training},
        "stages": [
            {
                "name": s.name,
                "train_subsets": s.train_subsets,
                "train_kinds": s.train_kinds,
                "replay": s.replay,
                "reset_optimizer": s.reset_optimizer,
                **s.training,
            }
            for s in recipe.stages
        ],
    }


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
    flat = flatten(nested, where, origins)
    types = key_types(nested, where)
    for key in overrides:
        if key not in types:
            fail_unknown(key, sorted(types), "in the overrides")
    given = {k: f"in the overrides: {k}={v!r}" for k, v in overrides.items()}
    return with_overrides(nested, flat, overrides, source, {**(origins or {}), **given})


def with_overrides(
    nested: dict[str, Any], flat: dict[str, Any], overrides: dict[str, Any], source: str | None, origins: dict[str, str]
) -> Recipe:
    """The recipe ``flat`` (checked dotted keys of ``nested``) with ``overrides`` on top, built."""
    if overrides.get("model.model_name_or_path") is not None:  # a checkpoint replaces the file's from-scratch model
        flat = {k: v for k, v in flat.items() if not (k.startswith("model.") and k[6:] in FROM_SCRATCH_KEYS)}
    flat = {**flat, **overrides}
    return build_recipe(unflatten(flat, [s["name"] for s in nested.get("stages") or []]), source, origins)
