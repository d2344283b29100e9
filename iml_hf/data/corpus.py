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
from transformers.utils import logging

from iml_hf.tasks import CORPUS_COLUMNS, KINDS, Task

CORPUS_FORMAT_VERSION = 2  # 2: the referent column
#: The key of a dataset card's YAML metadata under which a published corpus names its origin.
CARD_METADATA_KEY = "iml_hf"
#: Task arguments ending in this name a local file or folder (``kb_path``): machine-dependent, so a
#: published corpus records the sha256 of their content (``task_files``) instead of the path, and a
#: recipe is compared with it on that content, not on the path.
PATH_SUFFIX = "_path"
logger = logging.get_logger(__name__)


def default_cache_dir() -> Path:
    """``$IML_HF_CACHE`` or ``~/.cache/iml_hf``."""
    return Path(os.environ.get("IML_HF_CACHE", Path.home() / ".cache" / "iml_hf"))


def corpus_key(task: Task, seed: int) -> str:
    """A short hash of everything that determines the corpus bytes: the task's arguments, its
    ``version`` (bumped when its ``build`` changes) and the corpus format."""
    payload = {
        "task": dataclasses.asdict(task),
        "seed": seed,
        "version": CORPUS_FORMAT_VERSION,
        "task_version": type(task).version,
    }
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


#: The file in a cache entry that records what the entry holds (its key and the fingerprint of its rows).
ENTRY_RECORD = "entry.json"


def verified_entry(path: Path) -> tuple[DatasetDict | None, str | None]:
    """The corpus of the cache entry at ``path`` if it can be trusted, else None and why: unreadable
    files, no record, a record for another key (another seed's files copied in) or rows that do not
    match the recorded fingerprint (a truncated or edited entry)."""
    try:
        record = json.loads((path / ENTRY_RECORD).read_text())
        if record.get("cache_key") != path.name:
            return None, f"it records the key {record.get('cache_key')!r}, not {path.name!r}"
        corpus = load_from_disk(str(path))
        if record.get("fingerprint") != corpus_fingerprint(corpus):
            return None, "its rows do not match the fingerprint recorded when it was built"
    except Exception as error:  # noqa: BLE001 - pyarrow, json and OS errors alike mean "unreadable"
        return (
            None,
            f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})",
        )
    return corpus, None


def load_or_build_corpus(task: Task, seed: int, cache_dir: str | Path | None = None) -> DatasetDict:
    """Return the task's corpus for ``seed``, building and caching it on first use.

    The cache entry is written to a temporary directory and renamed into place, so a crash or a
    concurrent run never leaves a half-written corpus behind. An entry is used only after it is
    verified against its record (``verified_entry``); an entry that fails is rebuilt, with a warning.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    path = root / "corpora" / corpus_key(task, seed)
    if path.exists():
        corpus, reason = verified_entry(path)
        if corpus is not None:
            return corpus
        logger.warning(f"the corpus cache entry {path} is unusable: {reason}; rebuilding it")
        shutil.rmtree(path, ignore_errors=True)
    corpus = task.build(seed)
    validate_corpus(corpus, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        corpus.save_to_disk(str(tmp))
        (tmp / "task.json").write_text(json.dumps(dataclasses.asdict(task), indent=2, sort_keys=True))
        record = {"cache_key": path.name, "seed": seed, "fingerprint": corpus_fingerprint(corpus)}
        (tmp / ENTRY_RECORD).write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
    except OSError:
        if not path.exists():  # another process may have won the race; theirs is identical
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def task_path_fields(task: Task) -> tuple[str, ...]:
    """The task's path-valued arguments (names ending in ``PATH_SUFFIX``)."""
    return tuple(f.name for f in dataclasses.fields(task) if f.name.endswith(PATH_SUFFIX))


def path_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; of a folder, of every file under it (its relative path, then its bytes)."""
    path = Path(path)
    files = (
        [(path.name, path)]
        if path.is_file()
        else sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    )
    digest = hashlib.sha256()
    for name, file in files:
        if not path.is_file():
            digest.update(f"{name}\n".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def published_task_arguments(task: Task) -> dict[str, Any]:
    """The task's arguments without its path-valued ones (what a dataset card publishes and compares)."""
    paths = task_path_fields(task)
    return {k: v for k, v in dataclasses.asdict(task).items() if k not in paths}


def task_file_digests(task: Task) -> dict[str, str]:
    """sha256 of the file (or folder) each set path-valued task argument names."""
    return {name: path_digest(getattr(task, name)) for name in task_path_fields(task) if getattr(task, name)}


def corpus_metadata(task: Task, seed: int, corpus: DatasetDict) -> dict[str, Any]:
    """What a published corpus records about its origin (its dataset card's ``iml_hf`` metadata):
    the task's arguments (path-valued ones as the sha256 of their content, in ``task_files``), the
    seed, the cache key and the fingerprint."""
    return {
        "task": published_task_arguments(task),
        **({"task_files": files} if (files := task_file_digests(task)) else {}),
        "seed": seed,
        "cache_key": corpus_key(task, seed),
        "fingerprint": corpus_fingerprint(corpus),
        "corpus_format_version": CORPUS_FORMAT_VERSION,
        "task_version": type(task).version,
    }


def _card_metadata(folder: Path) -> dict[str, Any]:
    """The ``iml_hf`` metadata of the dataset card in ``folder`` ({} when the dataset has no card)."""
    from huggingface_hub import DatasetCard

    path = Path(folder) / "README.md"
    if not path.is_file():
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
        raise ValueError(
            f"{where} holds a corpus of task {made_by.get('name')!r}, but the recipe's task.name is {task.name!r}"
        )
    paths = task_path_fields(task)  # local paths differ between machines: compared by content below
    ours = published_task_arguments(task)
    differing = sorted(k for k in made_by.keys() | ours.keys() if k not in paths and made_by.get(k) != ours.get(k))
    if differing:
        detail = ", ".join(f"task.{k}: dataset {made_by.get(k)!r}, recipe {ours.get(k)!r}" for k in differing)
        raise ValueError(
            f"{where} was built with other task arguments than the recipe's ({detail}); "
            "set the recipe's task keys to the dataset's"
        )
    theirs_files = metadata.get("task_files") or {}
    for key in paths:
        if theirs_files.get(key) and getattr(task, key):
            digest = path_digest(getattr(task, key))
            if digest != theirs_files[key]:
                raise ValueError(
                    f"{where} was built from another task.{key} file than the recipe's "
                    f"{getattr(task, key)!r} (sha256 {theirs_files[key][:12]}... in the dataset card, "
                    f"{digest[:12]}... here); point task.{key} at the file the corpus was built from"
                )
    if "seed" in metadata and metadata["seed"] != seed:
        raise ValueError(
            f"{where} was built with seed {metadata['seed']}, but the recipe's seed is {seed} "
            f"(the seed also seeds training); set seed: {metadata['seed']} or build the corpus instead"
        )
    if "fingerprint" in metadata and metadata["fingerprint"] != corpus_fingerprint(corpus):
        raise ValueError(
            f"{where}: the data files do not match the fingerprint in the dataset card "
            f"({metadata['fingerprint'][:12]}...); the rows were changed after the card was written"
        )


def corpus_folder(source: str, revision: str | None = None) -> Path:
    """The folder holding the dataset ``source``: itself if it is a local folder, else the snapshot
    of the Hub dataset at ``revision`` (downloaded, or from the Hub cache when offline), so the data
    files and the card come from one commit."""
    from huggingface_hub import snapshot_download

    if Path(source).is_dir():
        return Path(source)
    return Path(snapshot_download(source, repo_type="dataset", revision=revision))


def load_corpus_dataset(
    source: str, task: Task, seed: int, revision: str | None = None, cache_dir: str | Path | None = None
) -> DatasetDict:
    """The corpus in the dataset ``source`` (a Hub id or a local folder) at ``revision``: the Hub
    dataset's snapshot (``corpus_folder``) read by ``datasets.load_dataset``, checked against the
    task's schema and against the metadata of the card in the same snapshot."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError
    from huggingface_hub.errors import HFValidationError

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    at = f" at revision {revision!r}" if revision else ""
    try:
        folder = corpus_folder(source, revision)
        loaded = load_dataset(str(folder), cache_dir=str(root / "datasets"))
    except HFValidationError as error:  # neither a folder nor a repo id
        raise ValueError(f"corpus_dataset={source!r} is no local folder and no Hub dataset id ({error})") from None
    except (OSError, ConnectionError, DatasetGenerationError) as error:  # missing, offline and not cached, unreadable
        lines = str(error.__cause__ or "").strip().splitlines()  # a cast error spans a schema: its first and last line
        cause = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
        raise ValueError(
            f"corpus_dataset={source!r}{at} cannot be read: {error}{f' ({cause})' if cause else ''}"
        ) from None
    corpus = DatasetDict({split: loaded[split] for split in loaded})
    try:
        validate_corpus(corpus, task)
    except ValueError as error:
        raise ValueError(f"corpus_dataset={source!r} is not a corpus of this task: {error}") from None
    check_corpus_metadata(_card_metadata(folder), task, seed, corpus, source)
    return corpus
