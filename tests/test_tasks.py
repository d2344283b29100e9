"""The task registry: built-in tasks load lazily, installed packages add theirs by entry point."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

import iml_hf.tasks as tasks

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
