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
    "output_dir",
    "torch_threads",
    "cache_dir",
    "tracker_group",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "hub_stage_branches",
    "corpus_repo_id",
    "overwrite_output_dir",
    "checkpoint_steps",
)
#: TrainingArguments fields of the same kind, under ``training.`` or a stage; machine-dependent
#: defaults (pinned memory) among them, so a run planned on a CPU resumes on a GPU machine.
PLACEMENT_TRAINING_KEYS = (
    "dataloader_pin_memory",
    "report_to",
    "run_name",
    "logging_dir",
    "disable_tqdm",
    "logging_steps",
    "dataloader_num_workers",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
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
    return {key: value for key, value in flat.items() if not is_placement_key(key) and (with_seed or key != "seed")}


_MISSING = object()


def same_configuration(a: dict[str, Any], b: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """The keys on which two configurations (``configuration(...)`` maps) differ, sorted; ``[]``
    when they are the same run setup. A key that only one side has (a run recorded before the key
    existed) counts as equal when the other side holds the key's default: ``defaults`` maps dotted
    keys to the value a recipe that does not set them gets (``configuration_defaults``: the
    dataclass and TrainingArguments defaults). A key without a known default, or one side at a
    non-default value, differs (a removed key too): comparisons stay conservative, runs are never
    pooled or resumed on a guess."""
    defaults = defaults or {}
    differing = []
    for key in a.keys() | b.keys():
        x, y = a.get(key, _MISSING), b.get(key, _MISSING)
        if x is _MISSING:
            x = defaults.get(key, _MISSING)
        if y is _MISSING:
            y = defaults.get(key, _MISSING)
        if x is _MISSING or y is _MISSING or x != y:
            differing.append(key)
    return sorted(differing)


def configuration_defaults(resolved: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: the value a recipe that does not set the key gets}, shaped like
    ``configuration(resolved)``: the dataclass defaults of the top-level keys, of the run's task
    class (``task.*``), of every section class (model, evaluation, each measurement), the toolkit's
    training defaults over TrainingArguments' own (``training.*``) and the stage fields' defaults
    (``stages.<name>.train_kinds`` ...; a stage's TrainingArguments keys default to the run's
    ``training`` values, so they get none here; a TrainingArguments default the source computes,
    like ``optim``'s, is left out). An unknown task gives no ``task.*`` defaults."""
    import dataclasses

    from iml_hf.config.args import STAGE_FIELDS, RunArguments, StageArguments
    from iml_hf.config.keys import RESERVED_TRAINING_KEYS, SECTION_CLASSES, TRAINING_DEFAULTS
    from iml_hf.config.training_fields import UNKNOWN, training_fields
    from iml_hf.config.validation import field_default
    from iml_hf.tasks import get_task_class

    def field_defaults(cls: type) -> dict[str, Any]:
        defaults = {f.name: field_default(f) for f in dataclasses.fields(cls) if f.init}
        return {name: value for name, value in defaults.items() if value is not dataclasses.MISSING}

    tree: dict[str, Any] = field_defaults(RunArguments)
    task_name = (resolved.get("task") or {}).get("name")
    try:
        tree["task"] = {**field_defaults(get_task_class(task_name)), "name": task_name}
    except (KeyError, ValueError, TypeError, ImportError):
        pass
    tree.update({section: field_defaults(cls) for section, cls in SECTION_CLASSES.items()})
    # Every new run records a concrete loss mode; one recorded before model.loss_on existed trained
    # its questions on the answer only.
    tree["model"]["loss_on"] = "answer"
    training = {
        name: f.default
        for name, f in training_fields().items()
        if name not in RESERVED_TRAINING_KEYS and f.default is not UNKNOWN
    }
    tree["training"] = {**training, **TRAINING_DEFAULTS}
    stage = {k: v for k, v in field_defaults(StageArguments).items() if k in STAGE_FIELDS and k != "name"}
    tree["stages"] = [
        {**stage, "name": s["name"]} for s in resolved.get("stages") or [] if isinstance(s, dict) and "name" in s
    ]
    return configuration(json.loads(json.dumps(tree, default=str)))
