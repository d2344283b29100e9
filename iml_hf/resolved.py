"""Resolved recipes (as saved in results.json) as flat {dotted key: value} maps, to compare runs.

Pure Python, so the report and the sweep read recipes without importing the training stack.
"""

from __future__ import annotations

import json
from typing import Any


def flatten_resolved(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A resolved recipe (``Recipe.resolved``, as saved in results.json) as {dotted key: value};
    stages are keyed by name (``stages.x1.max_steps``)."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flatten_resolved(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree and all(isinstance(x, dict) and "name" in x for x in tree):
        return {k: v for x in tree for k, v in flatten_resolved(x, f"{prefix}{x['name']}.").items()}
    return {prefix.rstrip("."): tree}


#: Recipe keys that say where and how a run executes, not what it computes.
PLACEMENT_KEYS = ("output_dir", "torch_threads")


def configuration(resolved: dict[str, Any], with_seed: bool = True) -> dict[str, Any]:
    """What a run computes: its resolved recipe as {dotted key: JSON value} without the placement
    keys (and without the seed unless ``with_seed``), so two runs' configurations can be compared."""
    skip = PLACEMENT_KEYS if with_seed else (*PLACEMENT_KEYS, "seed")
    flat = flatten_resolved(json.loads(json.dumps(resolved)))
    return {key: value for key, value in flat.items() if key not in skip}
