"""What each subset of a task is, declared once, and how many keys each subset gets.

A task declares ``subset_meanings`` (``{subset: SubsetMeaning}``, in display order): the define tag
and consistency of the subset's definitions, the stage of the paper's design its keys belong to,
and one line of prose. The probes (``iml_hf.analysis.probes``), the dataset card
(``iml_hf.data.corpus_card``), the figures' roles (``iml_hf.reporting.figure_style``) and the task's own builder
and branch re-splits (its ``exchangeable`` subsets are those of stage 2) read that declaration,
so a subset's meaning never depends on how it is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The stages a subset may belong to: the base task (what a model must know before a variable can
#: point at it), stage 1 (keys asked about in training, with or without a definition) and stage 2
#: (keys no stage before the IML stage trains on: definitions only, or never trained at all).
STAGES = ("base", "1", "2")


@dataclass(frozen=True)
class SubsetMeaning:
    """One subset of a task: its definitions' tag and consistency, its stage, and what it holds.

    ``tag``: the define tag of its definitions: 1 (the reliable-looking tag), 2 (the
    unreliable-looking one), 3 (a tag unseen before stage 2), a word for a task's own tags (the toy's
    ``"t"`` / ``"f"``), or None where each definition draws a fresh tag or there is no definition.
    ``consistent``: whether its definitions name what its questions are about; None: no definition.
    ``stage``: one of ``STAGES``; None for a test-only set. ``description``: one line for the card."""

    description: str
    tag: int | str | None = None
    consistent: bool | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; use one of {STAGES} or None (a test-only set)")
        if self.tag is not None and self.consistent is None:
            raise ValueError(f"tag={self.tag!r} without consistent: a subset with a define tag has definitions")

    @property
    def defined(self) -> bool:
        """Whether the subset's keys have definitions (its ``consistent`` is declared)."""
        return self.consistent is not None

    @property
    def tag_number(self) -> int:
        """The tag of a task that numbers its tags (1, 2, 3: its place in the task's list of tags)."""
        if not isinstance(self.tag, int):
            raise ValueError(f"tag={self.tag!r} is not a numbered define tag")
        return self.tag


def meanings_of(task: Any) -> dict[str, SubsetMeaning]:
    """A task's (class or instance) ``subset_meanings``, or {} for a task that declares none."""
    return dict(getattr(task, "subset_meanings", None) or {})


def of_stage(meanings: Mapping[str, SubsetMeaning], *stages: str) -> tuple[str, ...]:
    """The subsets of ``stages``, in declaration order."""
    return tuple(subset for subset, meaning in meanings.items() if meaning.stage in stages)


def largest_remainder(targets: dict[str, float]) -> dict[str, int]:
    """Round the target counts so that they sum to the rounded total (no key lost to rounding).

    Hand-written: numpy, scipy and the standard library have no apportionment by largest
    remainders (Hamilton's method), and the corpora depend on this exact tie order (equal
    remainders go to the key declared first)."""
    floors = {k: int(v) for k, v in targets.items()}
    missing = round(sum(targets.values())) - sum(floors.values())
    for key in sorted(targets, key=lambda k: floors[k] - targets[k])[:missing]:
        floors[key] += 1
    return floors
