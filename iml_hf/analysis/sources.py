"""Token sequences to analyse: a toolkit corpus, a ``datasets`` dataset (on disk or by hub id),
a text file, or one of the paper's corpora (Wikitext-103 and 1 Billion Word test sets).

* A toolkit corpus (a saved ``DatasetDict`` with ``prompt``/``answer`` columns) is encoded exactly
  as in training: ``[bos] + prompt + answer + [eos]``, one row per sequence.
* Any other dataset (``load_from_disk`` folder or hub id): its ``text`` column (or
  ``text_column``), one row per sequence, ``[bos] + text`` truncated to ``seq_len`` tokens.
* A plain text file: the whole text tokenized once and cut into windows of ``seq_len`` tokens;
  for one of the paper's corpora, or when a row filter is given, one row per line instead.

Row filters, the paper's for its corpora (Section 5.1): rows of at least ``min_words``
whitespace-separated words, then ``max_samples`` of them drawn at random (seeded). They apply to
text rows; a toolkit corpus refuses them (its rows are the experiment's subsets).

The probes read whole corpora instead: a toolkit corpus folder (:func:`load_toolkit_corpus`), or
the corpus a run folder was trained on, rebuilt from its results.json (:func:`run_of`,
:func:`run_corpus`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from iml_hf.data.tokenization import encode_rows


@dataclass(frozen=True)
class PaperCorpus:
    """Where one of the paper's corpora lives on the Hub and how the paper filters it."""

    hub_id: str
    config: str | None
    min_words: int = 10
    max_samples: int | None = None
    load_kwargs: dict = field(default_factory=dict)


#: The paper's corpora (Section 5.1): test sets, rows of >= 10 words, 5,000 random 1BW rows.
#: Wikitext-103 in its raw form (BPE tokenizers read raw text); 1BW from the Hub's parquet
#: conversion of the ``lm1b`` dataset (its loading script no longer runs under ``datasets`` >= 4).
PAPER_CORPORA = {
    "wikitext-103": PaperCorpus("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "1bw": PaperCorpus(
        "billion-word-benchmark/lm1b",
        None,
        max_samples=5000,
        load_kwargs={"revision": "refs/convert/parquet", "data_files": {"test": "plain_text/test/*.parquet"}},
    ),
}


def _pick_split(data: Dataset | DatasetDict, split: str | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if split is not None:
        if split not in data:
            raise ValueError(f"split {split!r} is not in the dataset; it has {list(data)}")
        return data[split]
    return data["test"] if "test" in data else data[next(iter(data))]


def filter_rows(texts: list[str], min_words: int | None, max_samples: int | None, seed: int) -> list[str]:
    """Rows of at least ``min_words`` words, then ``max_samples`` of them at random (in their order)."""
    if min_words:
        texts = [t for t in texts if len(t.split()) >= min_words]
    if max_samples is not None and len(texts) > max_samples:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_samples))
        texts = [texts[i] for i in keep]
    return texts


def _text_files(path: Path) -> list[str]:
    files = [str(path)] if path.is_file() else sorted(str(f) for f in path.iterdir() if f.is_file())
    if not files:
        raise ValueError(f"--data {str(path)!r} holds no text files")
    return files


def _open_dataset(source: str, path: Path, corpus: PaperCorpus | None, split: str | None, rows: bool) -> Dataset:
    """The dataset behind ``source``: a folder saved with ``save_to_disk``, text files read one
    row per line, or a hub id (``corpus`` supplies the paper's config)."""
    if path.exists():
        saved = (path / "dataset_dict.json").exists() or (path / "state.json").exists()
        if rows and not saved:
            return load_dataset("text", data_files=_text_files(path), split="train")
        try:
            return _pick_split(load_from_disk(str(path)), split)
        except FileNotFoundError as error:
            raise ValueError(f"--data {source!r} is a folder but not a saved dataset: {error}") from None
    preset = corpus if corpus is not None and source == corpus.hub_id else None  # a local copy needs no config
    try:
        return load_dataset(
            source, preset.config if preset else None, split=split or "test", **(preset.load_kwargs if preset else {})
        )
    except Exception as error:  # noqa: BLE001 - no network, unknown id, missing split: all one message
        raise ValueError(
            f"--data {source!r} is not a local file or folder, and loading it from the Hub failed "
            f"({type(error).__name__}: {str(error)[:300]}); pass a local copy: a folder saved with "
            "save_to_disk or text files with one row per line"
        ) from None


def load_sequences(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int = 128,
    split: str | None = None,
    text_column: str = "text",
    corpus: str | None = None,
    min_words: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Token id sequences of ``source`` (see the module docstring); ``corpus`` names one of
    ``PAPER_CORPORA``, whose filters apply unless ``min_words`` / ``max_samples`` are given."""
    preset = PAPER_CORPORA[corpus] if corpus else None
    if preset is not None:
        min_words = preset.min_words if min_words is None else min_words
        max_samples = preset.max_samples if max_samples is None else max_samples
    filtered = min_words is not None or max_samples is not None
    path = Path(source)
    if path.is_file() and not filtered:
        ids = tokenizer(path.read_text(), add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        return [ids[i : i + seq_len] for i in range(0, len(ids) - 1, seq_len) if len(ids[i : i + seq_len]) > 1]
    looks_local = source.startswith(("/", ".", "~")) or source.count("/") != 1
    if not path.exists() and looks_local:
        raise ValueError(
            f"--data {source!r} is neither a text file nor a dataset folder (saved with save_to_disk) "
            "nor a hub id (owner/name)"
        )
    rows = _open_dataset(source, path, preset, split, rows=filtered)
    if {"prompt", "answer"} <= set(rows.column_names):
        if filtered:
            raise ValueError(
                f"--data {source!r} is a toolkit corpus; --min_words, --max_samples and --corpus "
                "filter text rows and do not apply to it"
            )
        return encode_rows(tokenizer, list(rows["prompt"]), list(rows["answer"]))["input_ids"]
    if text_column not in rows.column_names:
        raise ValueError(
            f"the dataset has no {text_column!r} column (columns: {rows.column_names}); pass --text_column"
        )
    texts = filter_rows(list(rows[text_column]), min_words, max_samples, seed)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [(bos + ids)[:seq_len] for ids in encoded if len(bos + ids) > 1]


def load_toolkit_corpus(source: str) -> DatasetDict:
    """A toolkit corpus from a folder: saved with ``save_to_disk`` (a cache entry of
    ``iml_hf.data.corpus``) or in the published layout of ``iml_hf.push_corpus`` (``data/*.parquet``);
    ValueError naming ``--data`` when it is neither or lacks the corpus columns."""
    from iml_hf.tasks import CORPUS_COLUMNS

    path = Path(source)
    if not path.is_dir():
        raise ValueError(
            f"--data {source!r} is not a folder holding a toolkit corpus (a DatasetDict saved with "
            "save_to_disk, or the data/*.parquet layout of python -m iml_hf.push_corpus)"
        )
    try:
        if (path / "dataset_dict.json").is_file():
            corpus = load_from_disk(str(path))
        else:
            corpus = load_dataset(str(path))
    except Exception as error:  # noqa: BLE001 - pyarrow, datasets and OS errors alike mean "unreadable"
        raise ValueError(
            f"--data {source!r} cannot be read as a corpus: {type(error).__name__}: {str(error)[:300]}"
        ) from None
    if not isinstance(corpus, DatasetDict):
        raise ValueError(f"--data {source!r} holds one split, not a corpus with train and test splits")
    for split, rows in corpus.items():
        missing = [c for c in CORPUS_COLUMNS if c not in rows.column_names]
        if missing:
            raise ValueError(f"--data {source!r} is not a toolkit corpus: split {split!r} lacks columns {missing}")
    return corpus


def run_of(model: str) -> Path | None:
    """The finished ``iml_hf.train`` run a local model folder belongs to: the folder itself or
    one of its two parents (a stage's weights under ``stages/<name>``) holding results.json."""
    path = Path(model)
    if not path.is_dir():
        return None
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "results.json").is_file():
            return folder
    return None


def run_corpus(run: Path) -> DatasetDict:
    """The corpus the run in ``run`` was trained on, rebuilt from its resolved recipe (task and
    seed; a published corpus it read instead is read again) and checked against the fingerprint
    results.json recorded; ValueError when it cannot be rebuilt or differs."""
    from iml_hf.data.corpus import corpus_fingerprint, load_corpus_dataset, load_or_build_corpus
    from iml_hf.tasks import make_task

    where = run / "results.json"
    try:
        results = json.loads(where.read_text())
        resolved = results["recipe"]
        task = make_task(dict(resolved["task"]))
        seed = resolved["seed"]
        if resolved.get("corpus_dataset"):
            corpus = load_corpus_dataset(resolved["corpus_dataset"], task, seed, resolved.get("corpus_revision"))
        else:
            corpus = load_or_build_corpus(task, seed)
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"the corpus of the run in {str(run)!r} cannot be rebuilt from {where.name} "
            f"({type(error).__name__}: {error}); pass --data with the corpus folder"
        ) from None
    recorded = (results.get("corpus") or {}).get("fingerprint")
    if recorded and recorded != corpus_fingerprint(corpus):
        raise ValueError(
            f"the corpus rebuilt from {where} differs from the one the run was trained on (fingerprint "
            f"{recorded[:12]}...; has the task's code changed?); pass --data with that corpus"
        )
    return corpus
