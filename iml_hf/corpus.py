"""Build a task's corpus once, cache it on disk keyed by a hash of its arguments, and fingerprint it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from iml_hf.tasks import CORPUS_COLUMNS, KINDS, Task

CORPUS_FORMAT_VERSION = 2  # 2: the referent column


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
