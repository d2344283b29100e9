"""Stage-2 branches: re-splitting the keys a task declares exchangeable, in counterbalanced pairs.

A task that supports branches declares ``exchangeable`` (subsets whose keys no stage before the
branching stage trains on, e.g. entity ``d1consis``/``d2consis``/``d3consis``/``no_qd_baseline``)
and ``counterbalanced`` (the two halves a pair of branches exchanges, e.g. ``d1consis`` and
``d2consis``). Branch ``b`` belongs to pair ``b // 2``:

* pair 0 keeps the task's own split (branch 0 is the plain run's corpus, byte for byte);
* pair ``p > 0`` shuffles the subset labels among the exchangeable keys with a generator seeded by
  ``(seed, p)`` (within groups where the task keeps a balance inside a group, e.g. the toy's
  aliases of one number);
* an odd branch exchanges the two ``counterbalanced`` halves of its pair's split, key for key.

So every key serves once under each half's tag within a pair, and a half's difficulty cancels.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from typing import TypeVar

#: Where the re-split labels are drawn from: independent of the corpus's own generator, so that
#: every row a task draws before its exchangeable subsets stays byte-identical across branches.
_SALT = "iml_hf-branch"

#: A task's key type (an alias, a variable, a number): the re-split hands back the keys it was given.
K = TypeVar("K", bound=Hashable)


def pair_of(branch: int) -> int:
    """The counterbalanced pair a branch belongs to (branches 2p and 2p + 1)."""
    return branch // 2


def resplit(
    assignment: Mapping[K, str],
    exchangeable: tuple[str, ...],
    halves: tuple[str, str],
    seed: int,
    branch: int | None,
    groups: Mapping[K, Hashable] | None = None,
) -> dict[K, str]:
    """``assignment`` (key -> subset) as branch ``branch`` re-splits it; None or branch 0: unchanged.

    Only keys whose subset is in ``exchangeable`` move, and the number of keys per subset (per group,
    with ``groups``) is kept. ``halves`` must be the same size for the exchange to be exact."""
    if branch is None or branch == 0:
        return dict(assignment)
    out = dict(assignment)
    pool = sorted((k for k, s in assignment.items() if s in exchangeable), key=str)
    pair = pair_of(branch)
    if pair:
        rng = random.Random(f"{_SALT}-{seed}-{pair}")
        by_group: dict[str, list[K]] = {}
        for key in pool:
            by_group.setdefault(str(groups[key]) if groups else "", []).append(key)
        for group in sorted(by_group):
            keys = by_group[group]
            labels = [assignment[k] for k in keys]
            rng.shuffle(labels)
            out.update(zip(keys, labels))
    if branch % 2:
        first, second = halves
        sizes = [sum(out[k] == h for k in pool) for h in halves]
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"a counterbalanced pair exchanges {first} and {second}, which must have the same "
                f"number of keys (they have {sizes[0]} and {sizes[1]}); make their fractions equal"
            )
        swap = {first: second, second: first}
        out.update({k: swap.get(out[k], out[k]) for k in pool})
    return out


def check_branch(task_name: str, branch: int | None, exchangeable: tuple[str, ...]) -> None:
    """``task.branch`` is an integer >= 0 on a task that declares exchangeable subsets, or null."""
    if branch is None:
        return
    if isinstance(branch, bool) or not isinstance(branch, int) or branch < 0:
        raise ValueError(f"task.branch={branch!r} is not valid: expected an integer >= 0 or null")
    if not exchangeable:
        raise ValueError(
            f"task {task_name!r} declares no exchangeable subsets, so it cannot branch; leave task.branch null"
        )
