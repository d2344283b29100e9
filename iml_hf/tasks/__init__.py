"""Task registry: every experiment family turns its arguments into the same corpus schema.

A task is a dataclass of arguments with a ``build(seed) -> DatasetDict`` method and class-level
facts (``subsets``, ``gap_subsets``). The corpus has splits ``train`` and ``test`` and the columns
of ``CORPUS_COLUMNS``; ``iml_hf.corpus`` caches it on disk.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from datasets import DatasetDict

#: The corpus contract between tasks and everything after them.
#: text = prompt + " " + answer (or the answer alone when the prompt is empty);
#: kind is "question", "definition" or "pair"; key is the alias/entity a row is about ("" if none).
CORPUS_COLUMNS = ("text", "prompt", "answer", "subset", "kind", "key")
KINDS = ("question", "definition", "pair")


class Task(Protocol):
    """What the pipeline needs from a task's argument dataclass."""

    name: str
    subsets: ClassVar[tuple[str, ...]]
    gap_subsets: ClassVar[tuple[str, str] | None]

    def build(self, seed: int) -> DatasetDict: ...


def task_registry() -> dict[str, type]:
    """Task name -> argument dataclass. Imported lazily so that tasks may import this module."""
    from iml_hf.tasks.modmul import ModMulTask

    return {"modmul": ModMulTask}


def make_task(config: dict[str, Any]) -> Task:
    """Instantiate the task named by ``config['name']`` with the remaining keys."""
    registry = task_registry()
    name = config.get("name")
    if name not in registry:
        raise ValueError(f"task.name={name!r} is unknown; available tasks: {sorted(registry)}")
    return registry[name](**config)
