"""Analysis sources: a text file, a toolkit corpus folder and any dataset saved to disk."""

from __future__ import annotations

import pytest
from datasets import Dataset

from iml_hf.analyze.sources import load_sequences
from iml_hf.tokenization import encode_rows


def test_text_file_is_cut_into_windows(tmp_path, tiny_tokenizer):
    text = " ".join(["1 2 = 2"] * 10)
    path = tmp_path / "text.txt"
    path.write_text(text)
    sequences = load_sequences(str(path), tiny_tokenizer, seq_len=8)
    flat = [t for s in sequences for t in s]
    full = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(full) == 41 and flat == full[:40]  # a last window of one token has nothing to predict
    assert [len(s) for s in sequences] == [8] * 5


def test_toolkit_corpus_is_encoded_as_in_training(tmp_path, tiny_corpus, tiny_tokenizer):
    tiny_corpus.save_to_disk(str(tmp_path / "corpus"))
    sequences = load_sequences(str(tmp_path / "corpus"), tiny_tokenizer)
    test = tiny_corpus["test"]
    assert sequences == encode_rows(tiny_tokenizer, list(test["prompt"]), list(test["answer"]))["input_ids"]
    train = load_sequences(str(tmp_path / "corpus"), tiny_tokenizer, split="train")
    assert len(train) == len(tiny_corpus["train"])
    with pytest.raises(ValueError, match="split 'dev' is not in the dataset"):
        load_sequences(str(tmp_path / "corpus"), tiny_tokenizer, split="dev")


def test_plain_dataset_uses_its_text_column(tmp_path, tiny_tokenizer):
    Dataset.from_dict({"body": ["1 2 = 2", "3 4 = 4 1 2"]}).save_to_disk(str(tmp_path / "data"))
    sequences = load_sequences(str(tmp_path / "data"), tiny_tokenizer, seq_len=5, text_column="body")
    assert sequences[0] == [tiny_tokenizer.bos_token_id] + tiny_tokenizer("1 2 = 2", add_special_tokens=False)["input_ids"]
    assert len(sequences[1]) == 5  # 7 tokens truncated to seq_len
    with pytest.raises(ValueError, match="pass --text_column"):
        load_sequences(str(tmp_path / "data"), tiny_tokenizer)
    with pytest.raises(ValueError, match="neither a text file nor a dataset"):
        load_sequences(str(tmp_path / "missing"), tiny_tokenizer)
