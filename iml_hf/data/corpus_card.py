"""The dataset card (README.md) of a published corpus: the YAML ``configs`` and features that
``datasets.load_dataset`` reads, the ``iml_hf`` metadata that ``iml_hf.data.corpus`` checks a recipe
against, and prose describing the task, every subset (as the task declares it) and every column."""

from __future__ import annotations

import sys
from typing import Any

import yaml
from datasets import DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData

from iml_hf.data.corpus import CARD_METADATA_KEY, corpus_metadata, published_task_arguments
from iml_hf.tasks import CORPUS_COLUMNS, Task
from iml_hf.tasks.subsets import meanings_of

#: What each corpus column holds (the contract of ``iml_hf.tasks.CORPUS_COLUMNS``).
COLUMN_DESCRIPTIONS = {
    "text": "the text trained on: prompt + ' ' + answer (the answer alone when the prompt is empty)",
    "prompt": "what the model is given when its answer is scored (empty for rows trained on as a whole)",
    "answer": "what the model must continue the prompt with; for entity QA any of several ';'-separated answers counts",
    "subset": "the subset the row belongs to (see Subsets)",
    "kind": "question, definition, pair (a pretraining equation of numbers) or association (which entity "
    "a variable stands for)",
    "key": "the alias, variable or entity the row is about ('' if none)",
    "referent": "what the key truly stands for: the number or entity whose questions it takes ('' if none)",
}


def task_overview(task: Task) -> str:
    """The task in prose: the docstring of the module that defines it (else of its class)."""
    cls = type(task)
    module = sys.modules.get(cls.__module__)
    return ((module.__doc__ if module else None) or cls.__doc__ or f"The {task.name} task.").strip()


def subset_description(task: Task, subset: str) -> str:
    """What ``subset`` holds, as the task's ``subset_meanings`` declare it."""
    meaning = meanings_of(task).get(subset)
    return meaning.description if meaning else "(not described)"


SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
)


def _size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "10M<n<100M")


def data_file(split: str) -> str:
    """Where a split's parquet file lies in the dataset repo (the layout ``load_dataset`` reads)."""
    return f"data/{split}-00000-of-00001.parquet"


def card_data(task: Task, seed: int, corpus: DatasetDict, meta: dict | None = None) -> DatasetCardData:
    """The YAML metadata: configs with a data file per split, features, split sizes, tags and ``iml_hf``
    (``meta``, else ``corpus_metadata``)."""
    first = next(iter(corpus.values()))
    ours: dict[str, Any] = {CARD_METADATA_KEY: meta or corpus_metadata(task, seed, corpus)}
    return DatasetCardData(
        pretty_name=f"iml_hf {task.name} corpus (seed {seed})",
        tags=["iml_hf", "implicit-meta-learning", task.name],
        size_categories=_size_category(sum(len(rows) for rows in corpus.values())),
        configs=[
            {"config_name": "default", "data_files": [{"split": split, "path": data_file(split)} for split in corpus]}
        ],
        dataset_info={
            "features": first.features._to_yaml_list(),
            "splits": [
                {"name": split, "num_bytes": rows.data.nbytes, "num_examples": len(rows)}
                for split, rows in corpus.items()
            ],
        },
        **ours,
    )


def _subset_table(task: Task, corpus: DatasetDict) -> str:
    counts: dict[str, dict[str, int]] = {split: {} for split in corpus}
    for split, rows in corpus.items():
        for subset in rows["subset"]:
            counts[split][subset] = counts[split].get(subset, 0) + 1
    splits = list(corpus)
    lines = [
        "| subset | " + " | ".join(f"{s} rows" for s in splits) + " | what it holds |",
        "|" + " --- |" * (len(splits) + 2),
    ]
    for subset in task.subsets:
        cells = " | ".join(str(counts[s].get(subset, 0)) for s in splits)
        lines.append(f"| `{subset}` | {cells} | {subset_description(task, subset)} |")
    return "\n".join(lines)


def _column_table(corpus: DatasetDict) -> str:
    lines = ["| column | type | what it holds |", "| --- | --- | --- |"]
    features = next(iter(corpus.values())).features
    for column in CORPUS_COLUMNS:
        dtype = getattr(features.get(column), "dtype", "?")
        lines.append(f"| `{column}` | {dtype} | {COLUMN_DESCRIPTIONS.get(column, '(not described)')} |")
    return "\n".join(lines)


def corpus_card(
    task: Task, seed: int, corpus: DatasetDict, repo_id: str | None = None, revision: str | None = None
) -> DatasetCard:
    """The dataset card of ``corpus``: metadata, the task, its arguments, subsets, columns and provenance."""
    meta = corpus_metadata(task, seed, corpus)
    name = repo_id or "DATASET_ID"
    at = f', revision="{revision}"' if revision else ""
    flag = f" --corpus_revision={revision}" if revision else ""
    sections = [
        f"# iml_hf corpus: task `{task.name}`, seed {seed}",
        f"A corpus of the implicit meta-learning task `{task.name}`, generated by iml_hf from the task "
        "arguments and seed below; splits: " + ", ".join(f"{s} ({len(r):,} rows)" for s, r in corpus.items()) + ".",
        "## The task\n\n" + task_overview(task),
        "## Subsets\n\nEvery subset of the task, in its order, with its rows per split.\n\n"
        + _subset_table(task, corpus),
        "## Columns\n\n" + _column_table(corpus),
        "## Provenance\n\n"
        f"- task arguments (recipe keys `task.*`), seed {seed}:\n\n```yaml\n"
        + yaml.safe_dump(published_task_arguments(task), sort_keys=False).rstrip()
        + "\n```\n\n"
        + "".join(
            f"- `task.{key}`: a local file or folder, sha256 `{digest}` of its content (its path is not "
            "published; a recipe reading this corpus names its own copy)\n"
            for key, digest in meta.get("task_files", {}).items()
        )
        + f"- cache key: `{meta['cache_key']}` (hash of the task arguments, seed and corpus format)\n"
        f"- fingerprint: `{meta['fingerprint']}` (sha256 of the rows, split by split)\n"
        f"- corpus format {meta['corpus_format_version']}, task version {meta['task_version']}",
        (
            "## How to use\n\n```python\nfrom datasets import load_dataset\n\n"
            f'corpus = load_dataset("{name}"{at})\n```\n\n'
            "An iml_hf recipe with the same task arguments and seed reads it instead of generating it: "
            f"`python -m iml_hf.train RECIPE.yaml --corpus_dataset={name}{flag}`; the run checks the task "
            "arguments, seed and fingerprint above against its recipe."
        ),
    ]
    return DatasetCard(f"---\n{card_data(task, seed, corpus, meta).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
