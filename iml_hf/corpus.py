"""Build a task's corpus once, cache it on disk keyed by a hash of its arguments, and fingerprint it;
or read a published corpus (a Hub dataset or a local folder in its layout), checked against the task."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from typing import Any

from datasets import DatasetDict, load_from_disk

from iml_hf.tasks import CORPUS_COLUMNS, KINDS, Task

CORPUS_FORMAT_VERSION = 2  # 2: the referent column
#: The key of a dataset card's YAML metadata under which a published corpus names its origin.
CARD_METADATA_KEY = "iml_hf"


def default_cache_dir() -> Path:
    """``$IML_HF_CACHE`` or ``~/.cache/iml_hf``."""
    return Path(os.environ.get("IML_HF_CACHE", Path.home() / ".cache" / "iml_hf"))


def corpus_key(task: Task, seed: int) -> str:
    """A short hash of everything that determines the corpus bytes: the task's arguments, its
    ``version`` (bumped when its ``build`` changes) and the corpus format."""
    payload = {"task": dataclasses.asdict(task), "seed": seed, "version": CORPUS_FORMAT_VERSION,
               "task_version": type(task).version}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"{task.name}-{digest[:16]}"


def corpus_fingerprint(corpus: DatasetDict) -> str:
    """sha256 of the corpus as canonical JSON lines, split by split: equal iff the rows are equal."""
    digest = hashlib.sha256()
    for split in sorted(corpus):
        digest.update(f"[{split}]\n".encode())
        for row in corpus[split]:
            digest.update((json.dumps(row, sort_keys=True) + "\n").encode())
    return digest.hexdigest()


def validate_corpus(corpus: DatasetDict, task: Task) -> None:
    """Check the schema every task promises; a failure here is a bug in the task."""
    for split in ("train", "test"):
        if split not in corpus:
            raise ValueError(f"task {task.name!r} produced no {split!r} split")
        columns = corpus[split].column_names
        if tuple(columns[: len(CORPUS_COLUMNS)]) != CORPUS_COLUMNS:
            raise ValueError(f"task {task.name!r} split {split!r} has columns {columns}, expected {CORPUS_COLUMNS}")
        unknown = set(corpus[split].unique("kind")) - set(KINDS)
        if unknown:
            raise ValueError(f"task {task.name!r} emitted unknown kinds {sorted(unknown)}")


def load_or_build_corpus(task: Task, seed: int, cache_dir: str | Path | None = None) -> DatasetDict:
    """Return the task's corpus for ``seed``, building and caching it on first use.

    The cache entry is written to a temporary directory and renamed into place, so a crash or a
    concurrent run never leaves a half-written corpus behind.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    path = root / "corpora" / corpus_key(task, seed)
    if path.exists():
        return load_from_disk(str(path))
    corpus = task.build(seed)
    validate_corpus(corpus, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        corpus.save_to_disk(str(tmp))
        (tmp / "task.json").write_text(json.dumps(dataclasses.asdict(task), indent=2, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        if not path.exists():  # another process may have won the race; theirs is identical
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def corpus_metadata(task: Task, seed: int, corpus: DatasetDict) -> dict[str, Any]:
    """What a published corpus records about its origin (its dataset card's ``iml_hf`` metadata):
    the task's arguments, the seed, the cache key and the fingerprint."""
    return {
        "task": dataclasses.asdict(task),
        "seed": seed,
        "cache_key": corpus_key(task, seed),
        "fingerprint": corpus_fingerprint(corpus),
        "corpus_format_version": CORPUS_FORMAT_VERSION,
        "task_version": type(task).version,
    }


def _card_metadata(source: str, revision: str | None) -> dict[str, Any]:
    """The ``iml_hf`` metadata of the dataset card beside the data ({} when there is none)."""
    from huggingface_hub import DatasetCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if Path(source).is_dir():
        path = Path(source) / "README.md"
        if not path.is_file():
            return {}
    else:
        try:
            path = Path(hf_hub_download(source, "README.md", repo_type="dataset", revision=revision))
        except EntryNotFoundError:
            return {}
    return DatasetCard.load(path).data.to_dict().get(CARD_METADATA_KEY) or {}


def check_corpus_metadata(metadata: dict[str, Any], task: Task, seed: int, corpus: DatasetDict, source: str) -> None:
    """A published corpus must come from the recipe's task arguments and seed (they define its
    subsets and contrasts) and hold the rows its card fingerprints; a card without metadata is not checked."""
    if not metadata:
        return
    where = f"corpus_dataset={source!r}"
    made_by = metadata.get("task") or {}
    if made_by.get("name") != task.name:
        raise ValueError(f"{where} holds a corpus of task {made_by.get('name')!r}, but the recipe's task.name is {task.name!r}")
    ours = dataclasses.asdict(task)
    differing = sorted(k for k in made_by.keys() | ours.keys() if made_by.get(k) != ours.get(k))
    if differing:
        detail = ", ".join(f"task.{k}: dataset {made_by.get(k)!r}, recipe {ours.get(k)!r}" for k in differing)
        raise ValueError(f"{where} was built with other task arguments than the recipe's ({detail}); "
                         "set the recipe's task keys to the dataset's")
    if "seed" in metadata and metadata["seed"] != seed:
        raise ValueError(f"{where} was built with seed {metadata['seed']}, but the recipe's seed is {seed} "
                         f"(the seed also seeds training); set seed: {metadata['seed']} or build the corpus instead")
    if "fingerprint" in metadata and metadata["fingerprint"] != corpus_fingerprint(corpus):
        raise ValueError(f"{where}: the data files do not match the fingerprint in the dataset card "
                         f"({metadata['fingerprint'][:12]}...); the rows were changed after the card was written")


def load_corpus_dataset(source: str, task: Task, seed: int, revision: str | None = None,
                        cache_dir: str | Path | None = None) -> DatasetDict:
    """The corpus in the dataset ``source`` (a Hub id or a local folder, both read by
    ``datasets.load_dataset``) at ``revision``, checked against the task's schema and the card's metadata."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        loaded = load_dataset(source, revision=revision, cache_dir=str(root / "datasets"))
    except (FileNotFoundError, ConnectionError, DatasetGenerationError) as error:
        at = f" at revision {revision!r}" if revision else ""
        lines = str(error.__cause__ or "").strip().splitlines()  # a cast error spans a schema: its first and last line
        cause = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
        raise ValueError(f"corpus_dataset={source!r}{at} cannot be read: {error}{f' ({cause})' if cause else ''}") from None
    corpus = DatasetDict({split: loaded[split] for split in loaded})
    try:
        validate_corpus(corpus, task)
    except ValueError as error:
        raise ValueError(f"corpus_dataset={source!r} is not a corpus of this task: {error}") from None
    check_corpus_metadata(_card_metadata(source, revision), task, seed, corpus, source)
    return corpus
