"""The task registry: built-in tasks load lazily, installed packages add theirs by entry point."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

import iml_hf.tasks as tasks
from iml_hf.tasks.subsets import SubsetMeaning, largest_remainder, meanings_of, of_stage

PLUGIN = """
from dataclasses import dataclass
from typing import ClassVar

@dataclass
class EchoTask:
    name: str = "echo_plugin"
    version: ClassVar[int] = 1
    subsets: ClassVar[tuple[str, ...]] = ("a",)
    contrasts: ClassVar[dict] = {}

    def build(self, seed):
        raise NotImplementedError
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on sys.path declared as an ``iml_hf.tasks`` entry point, as an installed package would."""
    (tmp_path / "echo_plugin_module.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint("echo_plugin", "echo_plugin_module:EchoTask", tasks.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        return [point] if kwargs.get("group") == tasks.ENTRY_POINT_GROUP else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    tasks._plugin_targets.cache_clear()
    yield "echo_plugin"
    tasks._plugin_targets.cache_clear()
    tasks._REGISTRY.pop("echo_plugin", None)
    sys.modules.pop("echo_plugin_module", None)


def test_an_entry_point_task_is_listed_without_import_and_loads_by_name(plugin: str) -> None:
    assert plugin in tasks.task_names()
    assert "echo_plugin_module" not in sys.modules  # listing imports nothing
    cls = tasks.get_task_class(plugin)
    assert cls.__name__ == "EchoTask" and tasks.make_task({"name": plugin}).subsets == ("a",)


def test_built_in_tasks_win_over_a_plugin_of_the_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    point = importlib.metadata.EntryPoint("modmul", "nowhere:Nothing", tasks.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [point])
    tasks._plugin_targets.cache_clear()
    try:
        assert tasks.get_task_class("modmul").__name__ == "ModMulTask"
    finally:
        tasks._plugin_targets.cache_clear()


def test_an_unknown_task_names_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'modmul'"):
        tasks.get_task_class("modmull")


def test_every_built_in_task_declares_each_subset_once() -> None:
    for name in ("modmul", "entities", "set_inclusion", "digits_qa"):
        cls = tasks.get_task_class(name)
        meanings = cls.subset_meanings
        assert tuple(meanings) == cls.subsets, name  # the declaration is the display order
        assert cls.exchangeable == of_stage(meanings, "2"), name  # a branch re-splits the stage-2 keys
        assert set(cls.counterbalanced) <= {s for s in cls.exchangeable if meanings[s].defined}, name
        assert all(m.description for m in meanings.values()), name
        for subset, baseline in cls.definition_baselines.items():  # the gate compares defined with undefined
            assert meanings[subset].defined and (not isinstance(baseline, str) or not meanings[baseline].defined)


def test_a_subset_meaning_is_checked_and_read() -> None:
    drawn = SubsetMeaning("fresh tag per definition", consistent=True, stage="1")
    assert drawn.defined and drawn.tag is None and not SubsetMeaning("no definition", stage="2").defined
    assert SubsetMeaning("d", tag=2, consistent=True).tag_number == 2
    with pytest.raises(ValueError, match="not a numbered define tag"):
        _ = SubsetMeaning("toy", tag="t", consistent=True).tag_number
    with pytest.raises(ValueError, match="stage='3'"):
        SubsetMeaning("x", stage="3")
    with pytest.raises(ValueError, match="without consistent"):
        SubsetMeaning("x", tag=1)
    assert meanings_of(None) == {} and meanings_of(tasks.get_task_class("modmul"))["x1f"].consistent is False


def test_largest_remainder_keeps_the_total_and_gives_ties_to_the_first_declared() -> None:
    assert largest_remainder({"a": 1.5, "b": 1.5, "c": 1.0}) == {"a": 2, "b": 1, "c": 1}
    assert largest_remainder({"a": 0.2, "b": 0.7, "c": 2.1}) == {"a": 0, "b": 1, "c": 2}
    counts = largest_remainder(
        {s: share * 37 for s, share in zip("abcdefg", (0.05, 0.25, 0.25, 0.05, 0.15, 0.15, 0.1))}
    )
    assert sum(counts.values()) == 37


def test_a_task_with_the_old_subset_descriptions_hook_is_refused_with_the_fix() -> None:
    class OldStyleTask:
        version, subsets, contrasts = 1, ("a",), {}
        subset_descriptions = {"a": "the subset"}

    with pytest.raises(TypeError, match="declares subset_descriptions.*declare subset_meanings"):
        tasks.register_task("old_style_never_registered")(OldStyleTask)
    assert "old_style_never_registered" not in tasks.task_names()
