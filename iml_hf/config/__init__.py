"""From a recipe to validated run objects, without importing torch or transformers.

``args``/``measurement_args`` hold the sections' dataclasses, ``training_fields`` the Trainer's
keys, ``keys`` the schema, ``recipe_files`` the YAML, ``recipe`` the Recipe and its checks,
``command_line`` the ``--key=value`` parser and ``help`` what ``--help`` prints. The names below are
imported on first use: the tasks import ``iml_hf.config.validation``, and the parser the tasks.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "parse_recipe": "iml_hf.config.command_line",
    "Recipe": "iml_hf.config.recipe",
    "build_recipe": "iml_hf.config.recipe",
    "recipe_from": "iml_hf.config.recipe",
    "load_yaml": "iml_hf.config.recipe_files",
    "load_yaml_origins": "iml_hf.config.recipe_files",
    "RecipeError": "iml_hf.config.validation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'iml_hf.config' has no attribute {name!r}")
