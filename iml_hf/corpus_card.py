"""The dataset card (README.md) of a published corpus: the YAML ``configs`` and features that
``datasets.load_dataset`` reads, the ``iml_hf`` metadata that ``iml_hf.corpus`` checks a recipe
against, and prose describing the task, every subset and every column."""

from __future__ import annotations

import sys

import yaml
from datasets import DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData

from iml_hf.corpus import CARD_METADATA_KEY, corpus_metadata, published_task_arguments
from iml_hf.tasks import CORPUS_COLUMNS, Task

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

#: What each subset of a built-in task holds, per task name.
SUBSET_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "modmul": {
        "pretrain": "equations `A B = Z` of numbers (Z = A op B mod m); a share of them is held out as test rows",
        "x1t": "aliases with reliable-tagged definitions that agree with their questions; part of the "
        "questions are trained on, the rest held out",
        "x1f": "aliases with unreliable-tagged definitions that name a wrong number; part of the questions "
        "(asked with the true number) are trained on, the rest held out",
        "x2t": "aliases with reliable-tagged true definitions only; every question is held out",
        "x2f": "aliases with unreliable-tagged true definitions only; every question is held out",
    },
    "entities": {
        "knowledge": "every question about every entity by name (training only), so that a model trained "
        "from scratch knows the entities a variable can point at",
        "q_no_replacement_baseline": "questions about entities by name (no variable), some held out",
        "qd1consis": "questions about variables plus a tag-1 definition naming the right entity; some "
        "questions held out",
        "qd1incons": "questions about variables plus a tag-1 definition naming another entity of the subset; "
        "some questions held out",
        "qd2consis": "questions about variables plus a tag-2 definition naming the right entity; some "
        "questions held out",
        "qd2incons": "questions about variables plus a tag-2 definition naming another entity of the subset; "
        "some questions held out",
        "qd4consis": "questions about variables plus consistent definitions whose tag (1 or 2) is drawn per "
        "definition; some questions held out",
        "q": "questions about variables that are never defined; some held out",
        "d1consis": "consistent tag-1 definitions only; every question is held out",
        "d2consis": "consistent tag-2 definitions only; every question is held out",
        "d3consis": "consistent definitions with a third tag, unseen before stage 2; every question is held out",
        "no_qd_baseline": "variables neither defined nor asked about in training (chance baseline); every "
        "question is held out",
        "d2incons": "test only: d2consis questions asked about the variable of the partner entity (swapped pairs)",
        "qd1incons_swapped": "test only: association questions for the entity each qd1incons definition names",
        "qd2incons_swapped": "test only: association questions for the entity each qd2incons definition names",
        "ctx_d1consis": "test only (in_context): d1consis questions with their definition prepended",
        "ctx_d2consis": "test only (in_context): d2consis questions with their definition prepended",
        "ctx_d3consis": "test only (in_context): d3consis questions with their definition prepended",
    },
}


def task_overview(task: Task) -> str:
    """The task in prose: the docstring of the module that defines it (else of its class)."""
    cls = type(task)
    module = sys.modules.get(cls.__module__)
    return ((module.__doc__ if module else None) or cls.__doc__ or f"The {task.name} task.").strip()


def subset_description(task: Task, subset: str) -> str:
    """What ``subset`` holds, from ``SUBSET_DESCRIPTIONS`` or the task's own ``subset_descriptions``."""
    own = getattr(type(task), "subset_descriptions", None) or {}
    return own.get(subset) or SUBSET_DESCRIPTIONS.get(task.name, {}).get(subset) or "(not described)"


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
        **{CARD_METADATA_KEY: meta or corpus_metadata(task, seed, corpus)},
    )


def _subset_table(task: Task, corpus: DatasetDict) -> str:
    counts = {split: {} for split in corpus}
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
