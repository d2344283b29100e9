"""The Hub keys of a recipe, checked at parse time: the top-level ``push_to_hub``/``hub_*`` keys, the
repo id a run pushes to (``hub_model_id``, else the run name) and the Trainer's own Hub keys, which
recipes may not use (they would push each stage's folder before any result exists). The push itself
is :mod:`iml_hf.training.hub`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from iml_hf.config.run_names import run_name

if TYPE_CHECKING:
    from iml_hf.config.args import RunArguments, StageArguments
    from iml_hf.config.recipe import Recipe

#: TrainingArguments fields of the Trainer's own push, and the top-level key that replaces each.
TRAINER_HUB_KEYS = {
    "push_to_hub": "push_to_hub",
    "hub_model_id": "hub_model_id",
    "hub_private_repo": "hub_private",
    "hub_strategy": "hub_stage_branches",
    "hub_token": None,
    "hub_always_push": None,
    "hub_revision": None,
}
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def repo_id_problem(value: str) -> str | None:
    """Why ``value`` is no Hub repo id (``huggingface_hub``'s own check), or None if it is one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as error:
        return str(error)
    return None


def hub_repo_id(recipe: Recipe) -> str:
    """``hub_model_id``, or the tracker run name (``iml_hf.config.run_names.run_name``: ``<recipe stem>-seed<S>``
    unless ``training.run_name`` says otherwise); the Hub puts a bare name under the token's user."""
    return recipe.run.hub_model_id or run_name(recipe)


def _trainer_hub_error(where: str, key: str) -> str:
    replacement = TRAINER_HUB_KEYS[key]
    instead = (
        f"use the top-level key '{replacement}' instead"
        if replacement
        else "the token comes from HF_TOKEN or `huggingface-cli login`"
        if key == "hub_token"
        else "iml_hf pushes the whole run once, after results.json exists (top-level push_to_hub)"
    )
    return f"{where}.{key} would make each stage's Trainer push its own folder before any result exists; {instead}"


def check_hub_keys(run: RunArguments, training: dict[str, Any], stages: list[StageArguments]) -> None:
    """Refuse the Trainer's own Hub keys and inconsistent top-level Hub keys (a ValueError naming the key)."""
    for where, values in [("training", training), *((f"stages.{s.name}", s.training) for s in stages)]:
        for key in values:
            if key in TRAINER_HUB_KEYS:
                raise ValueError(_trainer_hub_error(where, key))
    for key in ("hub_model_id", "corpus_repo_id"):
        value = getattr(run, key)
        problem = None if value is None else repo_id_problem(value)
        if problem:
            raise ValueError(
                f"{key}={value!r} is not a Hub repo id; use 'name' or 'user/name' "
                f"(letters, digits, '-', '_', '.'; {problem})"
            )
    if run.push_to_hub and not run.save_model:
        raise ValueError("push_to_hub=true needs save_model=true: the pushed repo would hold no model")
    if run.hub_stage_branches and not run.push_to_hub:
        raise ValueError("hub_stage_branches=true only says how to push; it needs push_to_hub=true")
    if run.hub_stage_branches:
        for stage in stages:
            if stage.name == "main" or not _BRANCH.match(stage.name):
                raise ValueError(
                    f"hub_stage_branches=true: stage name {stage.name!r} cannot be a branch name; "
                    "use letters, digits, '-', '_', '.' and not 'main'"
                )
    if run.corpus_revision is not None and run.corpus_dataset is None:
        raise ValueError("corpus_revision is set but corpus_dataset is not; name the dataset to read the corpus from")


def check_hub_repo_id(recipe: Recipe) -> None:
    """With ``push_to_hub``, the repo id the run pushes to must be one (a ValueError naming the key)."""
    if recipe.run.push_to_hub and not recipe.run.hub_model_id:
        problem = repo_id_problem(hub_repo_id(recipe))
        if problem:
            raise ValueError(
                f"push_to_hub=true: the default repo id, the run name {hub_repo_id(recipe)!r} "
                f"(training.run_name or <recipe stem>-seed<seed>), is no Hub repo id ({problem}); "
                "set hub_model_id"
            )
