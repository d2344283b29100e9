"""iml_hf: implicit meta-learning experiments on the Hugging Face stack.

The Python API (docs/api.md), imported on first use (PEP 562), so ``import iml_hf`` stays light:

- ``load_recipe(path_or_dict, **overrides) -> Recipe``: a validated recipe; overrides as dotted keys
  (``**{"stages.x1.max_steps": 100}``), top-level keys (``seed=3``) or a section's mapping.
- ``build_corpus(recipe) -> DatasetDict``: the task's corpus (built once, then cached).
- ``run(recipe, verbose=False) -> dict``: train every stage; the results (branched: trunk and branches).
- ``run_sweep(recipe, seeds=..., output_dir=..., sets=..., jobs=...) -> dict``: seeds x ``sets``, one
  process per run; the manifest.
- ``build_report(folder) -> dict``: aggregate a folder of runs; the summary.
- ``RecipeError``: what every bad recipe, key or value raises (a ``ValueError``).

The sweep and the report are ``run_sweep`` and ``build_report``, not ``sweep`` and ``report``: those
names are the modules ``iml_hf.sweep`` and ``iml_hf.report``, which would replace a function of the
same name on the package as soon as they are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "load_recipe": "iml_hf.api",
    "build_corpus": "iml_hf.api",
    "run": "iml_hf.api",
    "run_sweep": "iml_hf.api",
    "build_report": "iml_hf.api",
    "Recipe": "iml_hf.config.recipe",
    "RecipeError": "iml_hf.config.validation",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import an API name on first use (``iml_hf.run``), keeping ``import iml_hf`` free of torch."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'iml_hf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
