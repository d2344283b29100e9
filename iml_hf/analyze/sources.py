"""Token sequences to analyse, from a toolkit corpus, a ``datasets`` dataset on disk or a text file.

* A toolkit corpus (a saved ``DatasetDict`` with ``prompt``/``answer`` columns) is encoded exactly
  as in training: ``[bos] + prompt + answer + [eos]``, one row per sequence.
* Any other dataset on disk: its ``text`` column (or ``text_column``), one row per sequence,
  truncated to ``seq_len`` tokens.
* A plain text file: the whole text tokenized once and cut into windows of ``seq_len`` tokens.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk
from transformers import PreTrainedTokenizerBase

from iml_hf.tokenization import encode_rows


def _pick_split(data: Dataset | DatasetDict, split: str | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if split is not None:
        if split not in data:
            raise ValueError(f"split {split!r} is not in the dataset; it has {list(data)}")
        return data[split]
    return data["test"] if "test" in data else data[next(iter(data))]


def load_sequences(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int = 128,
    split: str | None = None,
    text_column: str = "text",
) -> list[list[int]]:
    """Token id sequences of ``source`` (see the module docstring for the three kinds)."""
    path = Path(source)
    if path.is_file():
        ids = tokenizer(path.read_text(), add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        return [ids[i : i + seq_len] for i in range(0, len(ids) - 1, seq_len) if len(ids[i : i + seq_len]) > 1]
    if not path.is_dir():
        raise ValueError(f"--data {source!r} is neither a text file nor a dataset folder (saved with save_to_disk)")
    try:
        rows = _pick_split(load_from_disk(str(path)), split)
    except FileNotFoundError as error:
        raise ValueError(f"--data {source!r} is a folder but not a saved dataset: {error}") from None
    if {"prompt", "answer"} <= set(rows.column_names):
        return encode_rows(tokenizer, list(rows["prompt"]), list(rows["answer"]))["input_ids"]
    if text_column not in rows.column_names:
        raise ValueError(f"the dataset has no {text_column!r} column (columns: {rows.column_names}); pass --text_column")
    encoded = tokenizer(list(rows[text_column]), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [(bos + ids)[:seq_len] for ids in encoded if len(bos + ids) > 1]
