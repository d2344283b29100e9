"""WordLevel tokenizer round trip, answer masks and loading by path."""

from __future__ import annotations

from transformers import AutoTokenizer

from iml_hf.tokenization import IGNORE_INDEX, encode_rows, load_pretrained_tokenizer, tokenize_corpus


def test_round_trip_covers_every_corpus_word(tiny_corpus, tiny_tokenizer):
    for split in tiny_corpus.values():
        for text in split["text"][:200]:
            ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tiny_tokenizer.unk_token_id not in ids
            assert len(ids) == len(text.split())
            assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tiny_tokenizer.convert_tokens_to_ids(["0", "1", "7"]) == [4, 5, 11]  # numbers first, in order


def test_labels_mask_prompt_and_keep_answer_and_definition(tiny_tokenizer):
    tok = tiny_tokenizer
    out = encode_rows(tok, ["3 x05 =", ""], ["6", "Dt x05 2"])
    question, definition = out["labels"]
    assert out["input_ids"][0] == [tok.bos_token_id, *tok.convert_tokens_to_ids(["3", "x05", "=", "6"]), tok.eos_token_id]
    assert question == [IGNORE_INDEX] * 4 + tok.convert_tokens_to_ids(["6"]) + [tok.eos_token_id]
    assert definition == [IGNORE_INDEX] + tok.convert_tokens_to_ids(["Dt", "x05", "2"]) + [tok.eos_token_id]
    assert out["answer_ids"][0] == tok.convert_tokens_to_ids(["6"])
    assert out["prompt_ids"][1] == [tok.bos_token_id]


def test_tokenize_corpus_lengths(tiny_corpus, tiny_tokenizer):
    tokenized = tokenize_corpus(tiny_corpus, tiny_tokenizer)
    row = tokenized["test"][0]
    assert row["input_ids"] == row["prompt_ids"] + row["answer_ids"] + [tiny_tokenizer.eos_token_id]
    assert len(row["labels"]) == len(row["input_ids"])


def test_saved_tokenizer_loads_with_auto_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Dt x05 3"
    assert loaded(text, add_special_tokens=False)["input_ids"] == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<bos>", "<eos>")
    again = load_pretrained_tokenizer(str(tmp_path))
    assert len(again) == len(tiny_tokenizer)
