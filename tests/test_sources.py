"""Analysis sources: a text file, a toolkit corpus folder and any dataset saved to disk."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from iml_hf.analysis.sources import filter_rows, load_sequences
from iml_hf.data.tokenization import encode_rows


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
    assert (
        sequences[0] == [tiny_tokenizer.bos_token_id] + tiny_tokenizer("1 2 = 2", add_special_tokens=False)["input_ids"]
    )
    assert len(sequences[1]) == 5  # 7 tokens truncated to seq_len
    with pytest.raises(ValueError, match="pass --text_column"):
        load_sequences(str(tmp_path / "data"), tiny_tokenizer)
    with pytest.raises(ValueError, match="neither a text file nor a dataset"):
        load_sequences(str(tmp_path / "missing"), tiny_tokenizer)


WIKITEXT_LINES = [
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game . \n",
    " It was released in January 2011 in Japan . \n",
    " The game began development in 2010 , carrying over a large portion of the work done . \n",
]


def test_paper_filters_keep_rows_of_ten_words_and_draw_samples(tmp_path, tiny_tokenizer):
    rows = [" ".join(["w"] * n) for n in (3, 9, 10, 25, 12, 40, 11)]
    kept = filter_rows(rows, min_words=10, max_samples=None, seed=0)
    assert [len(r.split()) for r in kept] == [10, 25, 12, 40, 11]
    drawn = filter_rows(rows, min_words=10, max_samples=3, seed=0)
    assert len(drawn) == 3 and set(drawn) <= set(kept) and drawn == filter_rows(rows, 10, 3, seed=0)
    assert any(filter_rows(rows, 10, 3, seed=s) != drawn for s in range(1, 6))  # the seed draws


def test_wikitext_local_copy_as_text_file_or_saved_dataset(tmp_path, tiny_tokenizer):
    """The raw test file (one row per line) and a save_to_disk copy of the Hub dataset give the
    same sequences: the two rows of >= 10 words, each starting with BOS."""
    raw = tmp_path / "wiki.test.raw"
    raw.write_text("".join(line if line.endswith("\n") else line + "\n" for line in WIKITEXT_LINES))
    from_file = load_sequences(str(raw), tiny_tokenizer, seq_len=64, corpus="wikitext-103")
    DatasetDict({"test": Dataset.from_dict({"text": WIKITEXT_LINES})}).save_to_disk(str(tmp_path / "saved"))
    from_disk = load_sequences(str(tmp_path / "saved"), tiny_tokenizer, seq_len=64, corpus="wikitext-103")
    long_rows = [WIKITEXT_LINES[3], WIKITEXT_LINES[5]]
    expected = [
        [tiny_tokenizer.bos_token_id] + tiny_tokenizer(r, add_special_tokens=False)["input_ids"] for r in long_rows
    ]
    assert from_disk == expected
    assert from_file == [
        [tiny_tokenizer.bos_token_id] + tiny_tokenizer(r.rstrip("\n"), add_special_tokens=False)["input_ids"]
        for r in long_rows
    ]
    # a folder of text files is read the same way
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "news.en.heldout-00000-of-00050").write_text(raw.read_text())
    assert load_sequences(str(tmp_path / "folder"), tiny_tokenizer, seq_len=64, corpus="1bw") == from_file


def test_1bw_draws_5000_rows(tmp_path, tiny_tokenizer):
    lines = [f"sentence {i} has exactly ten words in it , ok ." if i % 3 else f"short {i} ." for i in range(7600)]
    (tmp_path / "heldout.txt").write_text("\n".join(lines) + "\n")
    sequences = load_sequences(str(tmp_path / "heldout.txt"), tiny_tokenizer, seq_len=64, corpus="1bw", seed=1)
    assert len(sequences) == 5000  # of the 5,066 rows of >= 10 words
    assert (
        load_sequences(
            str(tmp_path / "heldout.txt"), tiny_tokenizer, seq_len=64, corpus="1bw", max_samples=10, min_words=0
        )
        != sequences[:10]
    )
    assert len(load_sequences(str(tmp_path / "heldout.txt"), tiny_tokenizer, corpus="1bw", max_samples=10)) == 10


def test_hub_id_without_network_names_the_local_alternatives(monkeypatch, tiny_tokenizer):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch the constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="loading it from the Hub failed.*save_to_disk or text files"):
        load_sequences("Salesforce/wikitext", tiny_tokenizer, corpus="wikitext-103")


def test_row_filters_read_a_text_file_by_line_and_refuse_a_toolkit_corpus(tmp_path, tiny_corpus, tiny_tokenizer):
    path = tmp_path / "rows.txt"
    path.write_text("1 2 = 2\n3 4 = 4 1 2 3 4 5 6\n")
    rows = load_sequences(str(path), tiny_tokenizer, seq_len=64, min_words=5)
    long_row = tiny_tokenizer("3 4 = 4 1 2 3 4 5 6", add_special_tokens=False)["input_ids"]
    assert rows == [[tiny_tokenizer.bos_token_id] + long_row]  # one row per line; the 4-word line is dropped
    tiny_corpus.save_to_disk(str(tmp_path / "corpus"))
    with pytest.raises(ValueError, match="is a toolkit corpus; --min_words"):
        load_sequences(str(tmp_path / "corpus"), tiny_tokenizer, max_samples=3)
    with pytest.raises(ValueError, match="is a toolkit corpus"):
        load_sequences(str(tmp_path / "corpus"), tiny_tokenizer, corpus="wikitext-103")
