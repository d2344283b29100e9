"""Task registry: every experiment family turns its arguments into the same corpus schema.

A task is a dataclass of arguments with a ``build(seed) -> DatasetDict`` method and class-level
facts: ``version`` (bumped whenever ``build`` changes what it emits, so a cached corpus is never
reused across versions), ``subsets`` (training subsets, in display order) and ``contrasts``
(``{name: (subset_a, subset_b)}``: the headline comparisons EM(a) - EM(b) that results.json, the
console and the report show). A task may declare ``default_loss`` (``answer`` unless it says
``full_text``): which tokens of a training question carry the loss when the recipe leaves
``model.loss_on`` unset; and ``subset_meanings`` (``{subset: SubsetMeaning}``,
``iml_hf.tasks.subsets``): each subset's define tag, consistency, stage and description, the one
place the probes, the dataset card and the figures read them from (the built-in tasks derive
``subsets`` and ``exchangeable`` from it). Tasks register with :func:`register_task`; the built-in
ones are named here as lazy ``module:attr`` targets (lm-evaluation-harness's registry habit), so
listing the tasks imports none of them.

The corpus has splits ``train`` and ``test`` and the columns of ``CORPUS_COLUMNS``; ``iml_hf.data.corpus``
caches it on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from datasets import Dataset, DatasetDict

from iml_hf.config.validation import suggest  # noqa: F401  (re-exported)

#: The corpus contract between tasks and everything after them.
#: text = prompt + " " + answer (or the answer alone when the prompt is empty);
#: kind: "question", "definition", "pair" or "association" (an entity-association question);
#: key: the alias/variable/entity a row is about ("" if none);
#: referent: what the key truly stands for (the number or entity whose questions it takes; "" if none).
CORPUS_COLUMNS = ("text", "prompt", "answer", "subset", "kind", "key", "referent")
KINDS = ("question", "definition", "pair", "association")


def corpus_row(prompt: str, answer: str, subset: str, kind: str, key: str = "", referent: str = "") -> dict[str, str]:
    """One corpus row in the shared schema; ``text`` is ``prompt + " " + answer``, or the answer
    alone for a row without a prompt (a definition trained on all of its tokens)."""
    text = f"{prompt} {answer}" if prompt else answer
    return {
        "text": text,
        "prompt": prompt,
        "answer": answer,
        "subset": subset,
        "kind": kind,
        "key": key,
        "referent": referent,
    }


#: Phrasings of association questions: a task's association rows have the subset
#: ``<phrasing>_<subset>`` and form the evaluation set ``assoc_<phrasing>_<subset>``.
ASSOCIATION_PROMPTS = ("who", "meaning", "stand_for", "name", "first_letter", "second_letter", "last_letter")


class Task(Protocol):
    """What the pipeline needs from a task's argument dataclass."""

    #: What makes it a dataclass to ``dataclasses.asdict``/``fields``/``replace``.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    name: str
    version: ClassVar[int]
    subsets: ClassVar[tuple[str, ...]]
    contrasts: ClassVar[dict[str, tuple[str, str]]]

    def build(self, seed: int) -> DatasetDict: ...

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """The words the task invents (aliases, variables, define tags); with
        ``model.add_task_tokens`` each becomes one token of a pretrained tokenizer."""
        ...


#: Built-in tasks as lazy ``module:attr`` targets; importing one registers it.
_LAZY: dict[str, str] = {
    "modmul": "iml_hf.tasks.modmul:ModMulTask",
    "entities": "iml_hf.tasks.entities:EntitiesTask",
    "set_inclusion": "iml_hf.tasks.set_inclusion:SetInclusionTask",
    "digits_qa": "iml_hf.tasks.digits_qa:DigitsQATask",
}
_REGISTRY: dict[str, type[Task]] = {}
#: Installed packages declare their own tasks as entry points of this group
#: (``[project.entry-points."iml_hf.tasks"] my_task = "my_package.tasks:MyTask"``), so a task
#: outside this repository works in recipes and on the command line without editing iml_hf.
ENTRY_POINT_GROUP = "iml_hf.tasks"


@functools.cache
def _plugin_targets() -> dict[str, str]:
    """Task name -> ``module:attr`` of every installed ``iml_hf.tasks`` entry point (read once)."""
    return {point.name: point.value for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _lazy_targets() -> dict[str, str]:
    """Every task known without importing it: the built-in ones, then installed plug-ins."""
    return {**_plugin_targets(), **_LAZY}


#: A task dataclass, as the decorator hands it back.
TaskT = TypeVar("TaskT", bound=Task)


def register_task(name: str) -> Callable[[type[TaskT]], type[TaskT]]:
    """Class decorator: make the task dataclass available as ``task.name: <name>`` in recipes."""

    def wrap(cls: type[TaskT]) -> type[TaskT]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice ({_REGISTRY[name].__qualname__}, {cls.__qualname__})")
        for attribute in ("version", "subsets", "contrasts"):
            if not hasattr(cls, attribute):
                raise TypeError(f"task {name!r} ({cls.__qualname__}) must define {attribute!r}")
        if hasattr(cls, "subset_descriptions") and not hasattr(cls, "subset_meanings"):
            raise TypeError(
                f"task {name!r} ({cls.__qualname__}) declares subset_descriptions, which iml_hf no longer "
                "reads: declare subset_meanings = {subset: SubsetMeaning(description, ...)} instead "
                "(iml_hf.tasks.subsets; docs/adding-a-task.md)"
            )
        _REGISTRY[name] = cls
        return cls

    return wrap


def task_names() -> list[str]:
    """Every task name, registered or lazily known, sorted."""
    return sorted({*_lazy_targets(), *_REGISTRY})


def get_task_class(name: str | None) -> type[Task]:
    """The task dataclass registered as ``name`` (importing its module on first use); None, a
    recipe without ``task.name``, is unknown like any other name."""
    if name not in _REGISTRY and name in _lazy_targets():
        module, attribute = _lazy_targets()[name].split(":")
        cls = getattr(importlib.import_module(module), attribute)
        _REGISTRY.setdefault(name, cls)
    if name not in _REGISTRY:
        raise ValueError(
            f"task.name={name!r} is unknown{suggest(name, task_names())} (available tasks: {task_names()})"
        )
    return _REGISTRY[name]


def task_registry() -> dict[str, type[Task]]:
    """Task name -> argument dataclass, for every known task."""
    return {name: get_task_class(name) for name in task_names()}


def eval_set_name(subset: str, kind: str) -> str:
    """The evaluation set a test row belongs to: its subset, or ``assoc_<subset>`` for an
    association question (whose subset is ``<phrasing>_<subset>``: ``assoc_who_d1consis``)."""
    return f"assoc_{subset}" if kind == "association" else subset


def eval_set_subset(name: str) -> tuple[int, str]:
    """An evaluation set's place and subset: (0, s) for held-out ``s``, (1, s) for an association
    set ``assoc_<phrasing>_s`` (or ``assoc_s``), (2, s) for a monitoring set ``train_<kind>_s``."""
    if name.startswith("train_"):
        return 2, name.split("_", 2)[-1]
    if name.startswith("assoc_"):
        subset = name.removeprefix("assoc_")
        phrasing = next((p for p in ASSOCIATION_PROMPTS if subset.startswith(f"{p}_")), None)
        return 1, subset.removeprefix(f"{phrasing}_") if phrasing else subset
    return 0, name


def eval_set_order(names: list[str], subsets: list[str]) -> list[str]:
    """Evaluation sets in display order: held-out, then association, then monitoring sets, each in
    the task's subset order (unknown subsets last, by name)."""
    rank = {s: i for i, s in enumerate(subsets)}

    def key(name: str) -> tuple[int, int, str]:
        place, subset = eval_set_subset(name)
        return place, rank.get(subset, len(rank)), name

    return sorted(names, key=key)


def valid_eval_sets(task: Task) -> list[str]:
    """Every evaluation-set name a recipe may list for ``task``: held-out sets (``<subset>``, and
    ``assoc_<phrasing>_<subset>`` for each of the task's ``association_prompts``) and monitoring
    sets of training rows (``train_<kind>_<subset>``)."""
    names = list(task.subsets)
    names += [
        eval_set_name(f"{p}_{s}", "association") for p in getattr(task, "association_prompts", ()) for s in task.subsets
    ]
    return names + [f"train_{kind}_{s}" for s in task.subsets for kind in ("question", "definition")]


def contrast_values(task_contrasts: dict[str, Any], em: dict[str, float]) -> dict[str, float]:
    """``{name: EM(a) - EM(b)}`` for every contrast whose two sets were evaluated."""
    return {name: em[a] - em[b] for name, (a, b) in task_contrasts.items() if a in em and b in em}


def string_table(rows: list[dict[str, str]]) -> Dataset:
    """Corpus rows as a Dataset of string columns (``CORPUS_COLUMNS``), built through Arrow in one
    go: ``Dataset.from_list`` encodes row by row, seconds for a corpus of some thousand rows."""
    import pyarrow as pa

    table = pa.table({c: pa.array([row[c] for row in rows], pa.string()) for c in CORPUS_COLUMNS})
    return Dataset(table)


def make_task(config: dict[str, Any]) -> Task:
    """Instantiate the task named by ``config['name']`` with the remaining keys."""
    return get_task_class(config.get("name"))(**config)
