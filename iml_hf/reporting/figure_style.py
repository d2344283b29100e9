"""One look for every figure: a colour per role, so a subset reads the same in every task's figure.

A set's *role* comes from what its task declares, never from the task's name: the define tag of
a defined subset (its ``subset_meanings``, ``iml_hf.tasks.subsets``; tag 1 is the reliable-looking
one, tag 2 the unreliable-looking one, a fresh tag per definition is a random tag), the
no-definition levels of its ``definition_baselines``, its ``base_task_sets``, and, for a task
without numbered tags (the toy's ``t`` / ``f`` buckets), the sides of its declared contrasts
(``x2t`` vs ``x2f``: reliable vs unreliable). The colour follows the role; the line style says
whether the set's variables are only defined in the IML stage (the task's ``exchangeable``
subsets: solid) or also had questions trained (dashed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iml_hf.tasks import eval_set_subset
from iml_hf.tasks.subsets import meanings_of

#: Colour of each role, the same in every task's figures.
ROLE_COLOURS = {
    "reliable": "#1f5fa8",  # define tag 1 (the paper's reliable-looking source)
    "unreliable": "#c0392b",  # define tag 2
    "third tag": "#2e8b57",  # a tag unseen before the IML stage
    "random tag": "#8e44ad",  # a fresh random tag per definition
    "no definition": "#7f7f7f",  # the no-definition baselines (q, no_qd_baseline)
    "base task": "#111111",  # the task the model must learn first (knowledge, pretraining pairs)
}
#: Markers per role, so the roles also part in greyscale print.
ROLE_MARKERS = {
    "reliable": "o",
    "unreliable": "s",
    "third tag": "^",
    "random tag": "D",
    "no definition": "x",
    "base task": ".",
}
#: Colours of sets without a role (in first-seen order).
OTHER_COLOURS = ("#b8860b", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#ff7f0e", "#393b79", "#637939")
#: Role of each numbered define tag; a defined subset whose definitions draw a fresh tag (tag None)
#: has the role "random tag".
TAG_ROLES = {1: "reliable", 2: "unreliable", 3: "third tag"}


@dataclass(frozen=True)
class SetStyle:
    """How one evaluation set is drawn: its role, colour, line style, marker and legend label."""

    role: str | None
    colour: str
    linestyle: Any
    marker: str
    label: str


def subset_roles(task: type | None) -> dict[str, str]:
    """``{subset: role}`` for every subset the task's declarations give a role."""
    if task is None:
        return {}
    roles: dict[str, str] = {}
    for baseline in getattr(task, "definition_baselines", {}).values():
        if isinstance(baseline, str):
            roles[baseline] = "no definition"
    for name in getattr(task, "base_task_sets", ()):
        roles.setdefault(eval_set_subset(name)[1], "base task")
    numbered = {  # defined subsets whose tag is a number, or drawn per definition
        subset: "random tag" if meaning.tag is None else TAG_ROLES.get(meaning.tag, "random tag")
        for subset, meaning in meanings_of(task).items()
        if meaning.defined and not isinstance(meaning.tag, str)
    }
    roles.update(numbered)
    if not numbered:  # no numbered tags: the declared contrasts pit the reliable side against the unreliable
        for a, b in getattr(task, "contrasts", {}).values():
            if a not in roles and b not in roles:
                roles[a], roles[b] = "reliable", "unreliable"
    return roles


def role_label(role: str | None) -> str:
    """A legend's words for a role."""
    return {
        "reliable": "reliable tag",
        "unreliable": "unreliable tag",
        "third tag": "third tag",
        "random tag": "random tag",
        "no definition": "no definition",
        "base task": "base task",
    }.get(role or "", "")


def set_style(name: str, task: type | None, others: list[str] | None = None) -> SetStyle:
    """The style of evaluation set ``name`` (a subset, ``assoc_...`` or ``train_<kind>_...``):
    colour by its subset's role (sets without one take ``OTHER_COLOURS`` by their place in
    ``others``), solid for the IML stage's definition-only subsets, dashed for the rest, dotted for
    association sets and dash-dot for monitoring sets of training rows."""
    place, subset = eval_set_subset(name)
    role = subset_roles(task).get(subset)
    if role:
        colour = ROLE_COLOURS[role]
    else:
        others = others if others is not None else []
        index = others.index(name) if name in others else len(others)
        colour = OTHER_COLOURS[index % len(OTHER_COLOURS)]
    exchangeable = set(getattr(task, "exchangeable", ()) or ())
    linestyle: Any = "-" if subset in exchangeable or role == "base task" else "--"
    if place == 1:
        linestyle = ":"
    elif place == 2:
        linestyle = "-."
    words = role_label(role)
    return SetStyle(role, colour, linestyle, ROLE_MARKERS.get(role or "", "v"), f"{name} ({words})" if words else name)


def chance_levels(task_config: dict[str, Any] | None) -> list[tuple[float, str]]:
    """The chance lines a task's EM figure draws, with what each is: the numeric no-definition
    levels the task declares (set inclusion's 0.5: true and false statements are balanced) and a
    uniform guess where the task's arguments fix the answer vocabulary (entity QA's synthetic
    knowledge base: 1 / ``values_per_relation``; digits: 1 / ``target_values``)."""
    if not task_config or not task_config.get("name"):
        return []
    from iml_hf.tasks import get_task_class

    try:
        task = get_task_class(task_config["name"])
    except ValueError:
        return []
    lines: dict[float, str] = {}
    for baseline in getattr(task, "definition_baselines", {}).values():
        if not isinstance(baseline, str):
            lines.setdefault(
                float(baseline), f"chance {float(baseline):g} (a definition-only set without its definition)"
            )
    if task_config.get("knowledge_base", "synthetic") == "synthetic" and task_config.get("values_per_relation"):
        n = int(task_config["values_per_relation"])
        lines.setdefault(1 / n, f"uniform guess 1/{n} (answers per relation)")
    if task_config.get("target_values"):
        n = int(task_config["target_values"])
        lines.setdefault(1 / n, f"uniform guess 1/{n} (target values)")
    return sorted(lines.items())
