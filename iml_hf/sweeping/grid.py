"""The sweep's grid: ``--set`` values, and every (combination, seed) run, each parsed as a recipe before any runs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.run_names import format_value, sweep_run_folder
from iml_hf.sweeping.manifest import SweepRun


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` -> (key, [v1, v2]) with YAML-typed values."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r} must look like key=value1,value2")
    key, values = text.split("=", 1)
    key = key.strip().removeprefix("--")
    try:
        items = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    except yaml.YAMLError:
        raise RecipeError(f"--set {text!r}: the values (split at commas) are not valid YAML") from None
    if not items:
        raise RecipeError(f"--set {text!r} gives no values")
    return key, items


def plan(
    recipe: str,
    output_dir: str,
    seeds: list[int],
    sets: dict[str, list[Any]],
    extra: list[str],
    threads: int,
    check_training: bool = False,
) -> list[SweepRun]:
    """Every (combination, seed) run, each validated by the recipe parser before anything runs and, with
    ``check_training`` (runs on this machine), by the stages' TrainingArguments too (that imports
    transformers; their checks depend on the machine, so a SLURM sweep leaves them to each run)."""
    runs, names = [], set()
    keys = list(sets)
    for combination in itertools.product(*(sets[k] for k in keys)):
        overrides = dict(zip(keys, combination))
        for seed in seeds:
            name = sweep_run_folder(overrides, seed)
            if name in names:
                raise RecipeError(
                    f"two runs of the grid would share the folder {name!r}; make the --set values distinct"
                )
            names.add(name)
            out = str(Path(output_dir) / name)
            flags = [f"--{k}={format_value(v)}" for k, v in overrides.items()]
            group = f"--tracker_group={Path(output_dir).resolve().name}"  # before extra: a given group wins
            argv = [
                recipe,
                group,
                *extra,
                *flags,
                f"--seed={seed}",
                f"--output_dir={out}",
                f"--torch_threads={threads}",
            ]
            recipe_ = parse_recipe(argv, prog="iml_hf.sweep")  # a bad key or value fails here, before any run
            if check_training:
                recipe_.check_training_arguments()
            if not recipe_.run.branches:
                runs.append(SweepRun(name, seed, overrides, out, argv, log=f"{out}.log"))
                continue
            for b in range(recipe_.run.branches):  # branch 0 runs the trunk first; the others wait for it
                runs.append(
                    SweepRun(
                        f"{name}/branch{b}",
                        seed,
                        overrides,
                        out,
                        [*argv, f"--only_branch={b}"],
                        log=f"{out}/branch{b}.log",
                        branch=b,
                    )
                )
    return runs


def trunk_run(run: SweepRun, runs: list[SweepRun]) -> SweepRun | None:
    """The run that trains ``run``'s trunk (branch 0 of the same seed folder), if ``run`` is a later branch."""
    if not run.branch:
        return None
    return next((r for r in runs if r.output_dir == run.output_dir and r.branch == 0), None)
