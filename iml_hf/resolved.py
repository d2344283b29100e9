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


#: Recipe keys that say where and how a run executes or reports, not what it computes: where it
#: writes and caches, its threads, its trackers and the Hub.
PLACEMENT_KEYS = (
    "output_dir", "torch_threads", "cache_dir", "tracker_group",
    "push_to_hub", "hub_model_id", "hub_private", "hub_stage_branches", "corpus_repo_id",
)
#: TrainingArguments fields of the same kind, under ``training.`` or a stage; machine-dependent
#: defaults (pinned memory) among them, so a run planned on a CPU resumes on a GPU machine.
PLACEMENT_TRAINING_KEYS = (
    "dataloader_pin_memory", "report_to", "run_name", "logging_dir", "disable_tqdm", "logging_steps",
    "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_prefetch_factor",
)


def is_placement_key(key: str) -> bool:
    """Whether a dotted resolved-recipe key is a placement key (``training.report_to``,
    ``stages.x1.dataloader_pin_memory``, ``output_dir``)."""
    parts = key.split(".")
    if len(parts) == 1:
        return key in PLACEMENT_KEYS
    return parts[0] in ("training", "stages") and parts[-1] in PLACEMENT_TRAINING_KEYS


def configuration(resolved: dict[str, Any], with_seed: bool = True) -> dict[str, Any]:
    """What a run computes: its resolved recipe as {dotted key: JSON value} without the placement
    keys (and without the seed unless ``with_seed``), so two runs' configurations can be compared."""
    flat = flatten_resolved(json.loads(json.dumps(resolved)))
    return {key: value for key, value in flat.items()
            if not is_placement_key(key) and (with_seed or key != "seed")}
