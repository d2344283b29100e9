"""WordLevel tokenizer round trip, answer masks and loading by path."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from iml_hf.data.tokenization import IGNORE_INDEX, encode_rows, load_pretrained_tokenizer, tokenize_corpus


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
    assert out["input_ids"][0] == [
        tok.bos_token_id,
        *tok.convert_tokens_to_ids(["3", "x05", "=", "6"]),
        tok.eos_token_id,
    ]
    assert question == [IGNORE_INDEX] * 4 + tok.convert_tokens_to_ids(["6"]) + [tok.eos_token_id]
    assert definition == [IGNORE_INDEX] + tok.convert_tokens_to_ids(["Dt", "x05", "2"]) + [tok.eos_token_id]
    assert out["answer_ids"][0] == tok.convert_tokens_to_ids(["6"])
    assert out["prompt_ids"][1] == [tok.bos_token_id]


def test_full_text_labels_every_token_after_bos(tiny_tokenizer):
    tok = tiny_tokenizer
    out = encode_rows(tok, ["3 x05 =", ""], ["6", "Dt x05 2"], ["question", "definition"], loss_on="full_text")
    question, definition = out["labels"]
    assert question == [IGNORE_INDEX] + tok.convert_tokens_to_ids(["3", "x05", "=", "6"]) + [tok.eos_token_id]
    assert question[1:] == out["input_ids"][0][1:]
    assert definition == [IGNORE_INDEX] + tok.convert_tokens_to_ids(["Dt", "x05", "2"]) + [tok.eos_token_id]
    assert out["prompt_ids"] == encode_rows(tok, ["3 x05 =", ""], ["6", "Dt x05 2"])["prompt_ids"]
    with pytest.raises(ValueError, match="loss_on='all'"):
        encode_rows(tok, ["3 x05 ="], ["6"], loss_on="all")


def test_tokenize_corpus_applies_the_loss_mode_to_the_train_split_only(tiny_corpus, tiny_tokenizer):
    answer = tokenize_corpus(tiny_corpus, tiny_tokenizer)
    full = tokenize_corpus(tiny_corpus, tiny_tokenizer, loss_on="full_text")
    assert full["test"]["labels"] == answer["test"]["labels"]
    for a, f, kind in zip(answer["train"], full["train"], tiny_corpus["train"]["kind"]):
        assert f["input_ids"] == a["input_ids"]
        assert f["labels"] == [IGNORE_INDEX] + f["input_ids"][1:]
        masked = sum(label == IGNORE_INDEX for label in a["labels"])
        assert masked == (1 if kind == "definition" else len(a["prompt_ids"]))


def test_tokenize_corpus_lengths(tiny_corpus, tiny_tokenizer):
    tokenized = tokenize_corpus(tiny_corpus, tiny_tokenizer)
    row = tokenized["test"][0]
    assert row["input_ids"] == row["prompt_ids"] + row["answer_ids"] + [tiny_tokenizer.eos_token_id]
    assert len(row["labels"]) == len(row["input_ids"])


def test_saved_tokenizer_loads_with_auto_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Dt x05 3"
    assert (
        loaded(text, add_special_tokens=False)["input_ids"]
        == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<bos>", "<eos>")
    again = load_pretrained_tokenizer(str(tmp_path))
    assert len(again) == len(tiny_tokenizer)


def test_plain_encoding_starts_with_bos_like_training_and_survives_saving(tiny_corpus, tiny_tokenizer, tmp_path):
    """``tokenizer(prompt)`` (as ``pipeline`` calls it) gives exactly a training row's prompt ids."""
    row = tokenize_corpus(tiny_corpus, tiny_tokenizer)["test"][7]
    assert tiny_tokenizer(row["prompt"])["input_ids"] == row["prompt_ids"]
    tiny_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(row["prompt"])["input_ids"] == row["prompt_ids"]
    assert reloaded.padding_side == "left"
    assert reloaded.decode(row["answer_ids"]) == row["answer"]


def test_text_generation_pipeline_on_a_finished_run_reproduces_the_toolkits_exact_match(tiny_recipe, tmp_path):
    """The saved run folder is a Hub artefact: ``pipeline("text-generation", model=run_dir)``
    answers the held-out questions exactly as the toolkit's own EM scored them."""
    import json

    from transformers import pipeline

    from iml_hf.config import parse_recipe
    from iml_hf.data.corpus import load_or_build_corpus
    from iml_hf.train import main

    out = tmp_path / "run"
    argv = [
        str(tiny_recipe),
        f"--output_dir={out}",
        "--stages.pretrain.max_steps=150",
        "--training.learning_rate=1e-2",
        "--stages.x1.max_steps=30",
        "--stages.x2.max_steps=30",
    ]
    main(argv)
    results = json.loads((out / "results.json").read_text())
    test = load_or_build_corpus(parse_recipe(argv).task, 0)["test"]
    generator = pipeline("text-generation", model=str(out), device="cpu")
    for subset, toolkit_em in results["final_em"].items():
        rows = test.filter(lambda r: r["subset"] == subset and r["kind"] != "association")  # noqa: B023
        outputs = generator(
            list(rows["prompt"]), max_new_tokens=1, do_sample=False, return_full_text=False, batch_size=32
        )
        answers = [o[0]["generated_text"].strip() for o in outputs]
        em = sum(a == b for a, b in zip(answers, rows["answer"])) / len(rows)
        assert em == toolkit_em, subset
    assert 0.2 < results["final_em"]["pretrain"] < 1  # a trained model, so the equality means something
