"""Branch settings of a recipe, checked at parse time, and where a branched run's folders are.

A recipe with ``branches: K`` trains the stages before ``branch_stage`` once (the trunk, in
``<output_dir>/trunk``) and the rest K times (``<output_dir>/branch<b>``), each on a counterbalanced
re-split of the task; :mod:`iml_hf.training.branching` runs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from iml_hf.config.validation import RecipeError, suggest

if TYPE_CHECKING:
    from iml_hf.config.recipe import Recipe

TRUNK = "trunk"


def branch_folder(output_dir: str | os.PathLike, branch: int) -> Path:
    return Path(output_dir) / f"branch{branch}"


def trunk_folder(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / TRUNK


def branch_index(recipe: Recipe) -> int:
    """The index of the first stage that runs per branch (default: the last stage)."""
    names = [s.name for s in recipe.stages]
    return names.index(recipe.run.branch_stage) if recipe.run.branch_stage else len(names) - 1


def check_branches(recipe: Recipe, where: str) -> None:
    """Refuse branch settings that cannot give what they promise, at parse time."""
    run, task = recipe.run, recipe.task
    branched = run.branches > 0 or getattr(task, "branch", None) is not None
    if run.branch_stage is not None and not branched:
        raise RecipeError(f"branch_stage={run.branch_stage!r} only applies with branches > 0 ({where})")
    if not branched:
        return
    if run.branches and getattr(task, "branch", None) is not None:
        raise RecipeError(
            f"task.branch is set by each branch of a branched run; leave it null with branches={run.branches} ({where})"
        )
    exchangeable = tuple(getattr(task, "exchangeable", ()))
    if not exchangeable:
        raise RecipeError(
            f"task {task.name!r} declares no exchangeable subsets, so it cannot branch; set branches: 0 ({where})"
        )
    names = [s.name for s in recipe.stages]
    if run.branch_stage is not None and run.branch_stage not in names:
        raise RecipeError(
            f"branch_stage={run.branch_stage!r} names no stage{suggest(run.branch_stage, names)} "
            f"(stages: {names}) ({where})"
        )
    first = branch_index(recipe)
    if first == 0:
        raise RecipeError(
            f"branch_stage={names[0]!r} is the first stage: branches share the stages before it, so "
            f"branch at a later stage ({where})"
        )
    for stage in recipe.stages[:first]:
        shared = sorted(set(exchangeable) & {*stage.train_subsets, *stage.replay})
        if shared:
            raise RecipeError(
                f"stages.{stage.name} trains on {shared}, whose keys branches re-split after it; branch before "
                f"{stage.name!r} or train those subsets only from {names[first]!r} on ({where})"
            )
    if not recipe.stages[first].reset_optimizer:
        raise RecipeError(
            f"stages.{names[first]}.reset_optimizer=false: a branch starts from the trunk's weights "
            f"with a fresh optimizer; set it to true ({where})"
        )
