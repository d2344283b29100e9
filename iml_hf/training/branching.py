"""Branching stages: the stages before ``branch_stage`` run once (the trunk), the rest K times.

A recipe with ``branches: K`` runs into ``<output_dir>/trunk`` (the stages before
``branch_stage``, with the task's own split) and then ``<output_dir>/branch<b>`` for b < K, each a
complete, resumable run folder of its own (``iml_hf.training.run_folder``) whose corpus is the task's
re-split ``task.branch = b`` (``iml_hf.tasks.resplit``: counterbalanced pairs, pair 0 the task's
own split). A branch folder starts as a resumed run: its work folder is seeded with the trunk's
finished stages, step offset, metrics and last weights, so ``iml_hf.training.pipeline.run`` trains the
branch stage exactly as it would have continued after the trunk (branch 0 reproduces the plain
run). Stage entries copied from the trunk keep only the evaluation sets of keys that do not move
between branches; the branch stage's start (``em_start``) measures the rest on the branch's split.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iml_hf.config.branches import branch_folder, branch_index, trunk_folder
from iml_hf.config.validation import RecipeError

if TYPE_CHECKING:
    from iml_hf.config import Recipe


def _sub_recipe(recipe: Recipe, changes: dict[str, Any], task_changes: dict[str, Any], stages: int | None) -> Recipe:
    """``recipe`` with other run keys, task keys and (``stages``) only its first stages, resolved again."""
    sub = copy.copy(recipe)
    sub.run = dataclasses.replace(recipe.run, **changes)
    sub.task = dataclasses.replace(recipe.task, **task_changes)
    sub.stages = list(recipe.stages[:stages] if stages is not None else recipe.stages)
    sub.measurements = dict(recipe.measurements)
    resolved = copy.deepcopy(recipe.resolved)
    resolved.update(changes)
    resolved["task"] = dataclasses.asdict(sub.task)
    resolved["stages"] = resolved["stages"][: len(sub.stages)]
    sub.resolved = resolved
    return sub


def trunk_recipe(recipe: Recipe) -> Recipe:
    """The stages before the branch stage, on the task's own split, saving their last weights."""
    return _sub_recipe(
        recipe,
        {
            "output_dir": str(trunk_folder(recipe.run.output_dir)),
            "branches": 0,
            "branch_stage": None,
            "only_branch": None,
            "save_model": True,
            "push_to_hub": False,
        },
        {},
        branch_index(recipe),
    )


def branch_recipe(recipe: Recipe, branch: int) -> Recipe:
    """Every stage, on the re-split ``task.branch = branch``, into ``<output_dir>/branch<b>``."""
    names = [s.name for s in recipe.stages]
    return _sub_recipe(
        recipe,
        {
            "output_dir": str(branch_folder(recipe.run.output_dir, branch)),
            "branches": 0,
            "branch_stage": names[branch_index(recipe)],
            "only_branch": None,
        },
        {"branch": branch},
        None,
    )


def moving_sets(task: Any, em: dict[str, Any]) -> set[str]:
    """The evaluation sets whose keys a branch may move (sets of exchangeable subsets, and the
    task's sets derived from them such as entity ``d2incons`` or ``ctx_d1consis``)."""
    from iml_hf.tasks import eval_set_subset

    derived = set(getattr(task, "branch_derived", ()))
    moving = set()
    for name in em:
        _, subset = eval_set_subset(name)
        base = subset.removeprefix("ctx_")
        if base in task.exchangeable or subset in derived:
            moving.add(name)
    return moving


def shared_entry(task: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """A trunk stage's results entry as a branch records it: without the sets that the branch
    re-splits (they were measured on another split) and the contrasts that read them."""
    entry = copy.deepcopy(entry)
    moving = moving_sets(task, entry.get("em", {}))
    for key in ("em", "n", "metrics"):
        entry[key] = {k: v for k, v in (entry.get(key) or {}).items() if k not in moving}
    pairs = dict(task.contrasts)
    entry["contrasts"] = {k: v for k, v in (entry.get("contrasts") or {}).items() if not ({*pairs.get(k, ())} & moving)}
    entry["shared_trunk"] = True
    return entry


def seed_branch(trunk_out: Path, branch: Recipe) -> None:
    """Give a branch that has not started a work folder that resumes after the trunk's last stage."""
    from iml_hf.training.run_folder import PROGRESS, RunFolder
    from iml_hf.utils.io import write_json_atomic

    folder = RunFolder(branch.run.output_dir)
    if folder.work.exists() or (folder.out / "results.json").exists():
        return  # started before (resumes by itself) or finished
    trunk = json.loads((trunk_out / "results.json").read_text())
    names = list(trunk["stages"])
    tmp = folder.work.with_name(folder.work.name + ".seeding")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "resume" / names[-1]).mkdir(parents=True)
    shutil.copy2(trunk_out / "model.safetensors", tmp / "resume" / names[-1] / "model.safetensors")
    if (trunk_out / "metrics.jsonl").exists():
        shutil.copy2(trunk_out / "metrics.jsonl", tmp / "metrics.jsonl")
    stages = {name: shared_entry(branch.task, trunk["stages"][name]) for name in names}
    write_json_atomic(
        tmp / PROGRESS,
        {
            "recipe": branch.resolved,
            "stages": stages,
            "step_offset": sum(e["steps"] for e in trunk["stages"].values()),
            "trunk": str(trunk_out),
        },
    )
    os.rename(tmp, folder.work)


def check_finished(folder: Path, recipe: Recipe, what: str) -> dict[str, Any]:
    """The results of a finished trunk or branch that this recipe would compute again (a
    RecipeError naming the differing keys otherwise: a stale trunk must never be built on)."""
    from iml_hf.config.resolved import configuration, configuration_defaults, same_configuration

    results = json.loads((folder / "results.json").read_text())
    old, new = configuration(results["recipe"]), configuration(recipe.resolved)
    differing = same_configuration(old, new)
    if differing:
        differing = same_configuration(old, new, configuration_defaults(recipe.resolved))
    if differing:
        raise RecipeError(
            f"{folder} holds a finished {what} of another configuration (differing keys: "
            f"{', '.join(differing[:6])}); delete it to train it again, or choose another --output_dir"
        )
    return results


def run_branched(recipe: Recipe) -> dict[str, Any]:
    """The trunk (unless finished), then every branch (or ``only_branch``) not finished yet; returns
    ``{"trunk": results, "branches": {b: results}}`` of the branches run or found finished."""
    from iml_hf.training.pipeline import run
    from iml_hf.utils import console

    recipe.check_training_arguments()  # every stage's, branch stages included, before anything is written
    trunk = trunk_recipe(recipe)
    trunk_out = trunk_folder(recipe.run.output_dir)
    if (trunk_out / "results.json").exists():
        check_finished(trunk_out, trunk, "trunk")
    else:
        console.say(f"trunk: stages {[s.name for s in trunk.stages]} once, into {trunk_out}")
        run(trunk)
    trunk_results = json.loads((trunk_out / "results.json").read_text())
    wanted = [recipe.run.only_branch] if recipe.run.only_branch is not None else range(recipe.run.branches)
    done: dict[int, dict[str, Any]] = {}
    for b in wanted:
        branch = branch_recipe(recipe, b)
        out = Path(branch.run.output_dir)
        if (out / "results.json").exists():  # finished: delete its folder to run it again
            done[b] = check_finished(out, branch, f"branch {b}")
            continue
        seed_branch(trunk_out, branch)
        console.say(
            f"branch {b} of {recipe.run.branches} (pair {b // 2}{', halves exchanged' if b % 2 else ''}): "
            f"stages {[s.name for s in branch.stages[branch_index(recipe) :]]} from the trunk's weights, into {out}"
        )
        done[b] = run(branch)
    results = {b: branch_folder(recipe.run.output_dir, b) / "results.json" for b in range(recipe.run.branches)}
    finished = {
        b: done[b] if b in done else json.loads(path.read_text()) for b, path in results.items() if path.exists()
    }
    if len(finished) == recipe.run.branches:
        write_seed_summary(Path(recipe.run.output_dir), recipe.run.seed, finished)
    return {"trunk": trunk_results, "branches": done}


def write_seed_summary(out: Path, seed: int, branches: dict[int, dict[str, Any]]) -> None:
    """``branches.json`` and ``README.md`` of a branched run's folder, once every branch has finished."""
    from iml_hf.reporting.nested_report import seed_markdown, seed_summary
    from iml_hf.utils.io import write_json_atomic

    summary = seed_summary(branches)
    write_json_atomic(out / "branches.json", summary)
    (out / "README.md").write_text(seed_markdown(summary, seed))
