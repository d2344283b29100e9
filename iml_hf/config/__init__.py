"""From a recipe to validated run objects, without importing torch or transformers.

``args``/``measurement_args`` hold the sections' dataclasses, ``training_fields`` the Trainer's
keys, ``keys`` the schema, ``recipe_files`` the YAML, ``recipe`` the Recipe and its checks,
``command_line`` the ``--key=value`` parser and ``help`` what ``--help`` prints (the one module that
imports transformers, for its help text, and only when ``--help`` asks). The names below are
imported on first use: the tasks import ``iml_hf.config.validation``, and the parser the tasks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from iml_hf.config.command_line import parse_recipe
    from iml_hf.config.recipe import Recipe, build_recipe, recipe_from
    from iml_hf.config.recipe_files import load_yaml, load_yaml_origins
    from iml_hf.config.validation import RecipeError

_EXPORTS = {
    "parse_recipe": "iml_hf.config.command_line",
    "Recipe": "iml_hf.config.recipe",
    "build_recipe": "iml_hf.config.recipe",
    "recipe_from": "iml_hf.config.recipe",
    "load_yaml": "iml_hf.config.recipe_files",
    "load_yaml_origins": "iml_hf.config.recipe_files",
    "RecipeError": "iml_hf.config.validation",
}
__all__ = ["Recipe", "RecipeError", "build_recipe", "load_yaml", "load_yaml_origins", "parse_recipe", "recipe_from"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'iml_hf.config' has no attribute {name!r}")
