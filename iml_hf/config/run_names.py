"""Names of runs, in one place: the name trackers and the Hub know a run by, and the folder a sweep
gives each of its runs. They differ on purpose: a sweep's runs share the recipe and seed names, and
each needs its own folder, while their tracker names are grouped by the sweep (``tracker_group``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iml_hf.config.recipe import Recipe


def recipe_stem(recipe: Recipe) -> str:
    """The recipe file's stem (``toy`` for recipes/toy.yaml), or the output folder's name without a file."""
    return Path(recipe.source).stem if recipe.source else Path(recipe.run.output_dir).name


def run_name(recipe: Recipe) -> str:
    """``training.run_name`` if the recipe sets one, else ``<recipe stem>-seed<seed>`` (the output
    folder's name for a recipe given on the command line only)."""
    if recipe.training.get("run_name"):
        return str(recipe.training["run_name"])
    return f"{recipe_stem(recipe)}-seed{recipe.run.seed}" if recipe.source else Path(recipe.run.output_dir).name


def format_value(value: Any) -> str:
    """A value as the command line (YAML) reads it back: null, true, 0.001, [1, 2], text."""
    return value if isinstance(value, str) else json.dumps(value)


def sweep_run_folder(overrides: dict[str, Any], seed: int) -> str:
    """``key=value,key=value/seed<S>`` (or ``seed<S>`` without overrides); safe as a path."""
    combination = ",".join(f"{k}={format_value(v)}".replace("/", "_").replace(" ", "") for k, v in overrides.items())
    return f"{combination}/seed{seed}" if combination else f"seed{seed}"
