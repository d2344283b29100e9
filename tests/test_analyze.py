"""``python -m iml_hf.analyze layers`` end to end on a saved tiny model, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.analyze import main


@pytest.fixture
def saved_model(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=3,
        n_embd=16,
        n_head=2,
        vocab_size=len(tiny_tokenizer),
        n_positions=64,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    path = tmp_path / "model"
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_layers_on_a_corpus_writes_json_and_plots(tmp_path, saved_model, tiny_corpus, capsys):
    tiny_corpus.save_to_disk(str(tmp_path / "corpus"))
    out = tmp_path / "analysis"
    code = main(
        [
            "layers",
            "--model",
            str(saved_model),
            "--data",
            str(tmp_path / "corpus"),
            "--output_dir",
            str(out),
            "--max_tokens",
            "300",
            "--min_position",
            "2",
            "--pca_samples",
            "10",
            "--linear_model_tokens",
            "5",
            "--max_final_loss",
            "100",
        ]
    )
    assert code == 0
    summary = json.loads((out / "layers.json").read_text())
    assert summary["num_layers"] == 3 and len(summary["inner_loss"]["mean"]) == 3 and len(summary["norms"]["mean"]) == 4
    assert summary["tokens"] == 300 and 0 < summary["inner_loss"]["tokens"] < 300  # position >= 2 only
    table1 = summary["norm_statistics"]["table1"]
    assert table1["pairs_per_trajectory"] == 2 and table1["chance_sequence_level"] == 0.25
    linear = summary["linear_model"]
    assert linear["tokens"] == 5 and len(linear["layers"]) == 3 and linear["table2"]["matrices"] == 10
    assert all(layer["agreement"] == 1.0 for layer in linear["layers"])
    assert summary["pca"] == {"samples": 10, "requested": 10}
    assert all((out / name).stat().st_size > 1000 for name in summary["plots"])
    assert "pca_trajectories.png" in summary["plots"]
    printed = capsys.readouterr().out
    assert "Figure 2" in printed and "Table 1" in printed and "chance 2^-2" in printed and "Table 2" in printed


def test_final_loss_filter_keeps_only_confident_tokens(tmp_path, saved_model, tiny_corpus):
    tiny_corpus.save_to_disk(str(tmp_path / "corpus"))
    args = [
        "layers",
        "--model",
        str(saved_model),
        "--data",
        str(tmp_path / "corpus"),
        "--min_position",
        "1",
        "--linear_model_tokens",
        "0",
        "--max_tokens",
        "200",
    ]
    main([*args, "--output_dir", str(tmp_path / "all"), "--max_final_loss", "100"])
    everything = json.loads((tmp_path / "all" / "layers.json").read_text())
    # nothing is that sure: Figure 2 is empty, Table 1 is still measured
    assert main([*args, "--output_dir", str(tmp_path / "none"), "--max_final_loss", "0.0"]) == 0
    none = json.loads((tmp_path / "none" / "layers.json").read_text())
    assert none["inner_loss"]["tokens"] == 0 and none["inner_loss"]["mean"] is None
    assert none["norm_statistics"] == everything["norm_statistics"]
    threshold = everything["inner_loss"]["mean"][-1]
    main([*args, "--output_dir", str(tmp_path / "some"), "--max_final_loss", str(threshold)])
    some = json.loads((tmp_path / "some" / "layers.json").read_text())
    assert 0 < some["inner_loss"]["tokens"] < everything["inner_loss"]["tokens"]
    assert some["inner_loss"]["mean"][-1] <= threshold


def test_bad_model_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    text = tmp_path / "t.txt"
    text.write_text("hello world")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "iml_hf.analyze",
            "layers",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            str(text),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "cannot load a causal LM" in done.stderr
    assert not out.exists()


def test_a_text_file_on_a_64_position_model_uses_windows_that_fit(tmp_path, saved_model, tiny_corpus, capsys):
    """The default window follows the model's positions (the toy model has 64); a longer --seq_len
    is a clear error, and nothing is written."""
    text = tmp_path / "t.txt"
    text.write_text(" ".join(tiny_corpus["train"]["text"][:200]))
    out = tmp_path / "analysis"
    assert (
        main(
            [
                "layers",
                "--model",
                str(saved_model),
                "--data",
                str(text),
                "--output_dir",
                str(out),
                "--max_tokens",
                "200",
                "--linear_model_tokens",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((out / "layers.json").read_text())["tokens"] == 200
    assert (
        main(
            [
                "layers",
                "--model",
                str(saved_model),
                "--data",
                str(text),
                "--output_dir",
                str(tmp_path / "x"),
                "--seq_len",
                "128",
            ]
        )
        == 2
    )
    assert "--seq_len 128 exceeds the 64 positions" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_no_model_is_named_as_such(tmp_path, capsys):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    text = tmp_path / "t.txt"
    text.write_text("hello world")
    assert main(["layers", "--model", str(folder), "--data", str(text), "--output_dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is a folder without config.json" in err and "sentencepiece" not in err.lower()


@pytest.mark.parametrize("flag", ["--seq_len=0", "--max_tokens=0", "--batch_size=-1", "--min_position=-2"])
def test_out_of_range_numbers_are_refused_naming_the_flag(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["layers", "--model", "m", "--data", "d", "--output_dir", str(tmp_path / "x"), flag])
    assert exit_.value.code == 2 and f"argument {flag.split('=')[0]}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


WIKITEXT = "".join(
    [
        "\n",
        " = Robert Boulter = \n",
        "\n",
        " Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on "
        "the television series The Bill in 2000 . \n",
        " In 2006 , Boulter starred alongside Whishaw in the play Citizenship written by Mark Ravenhill . \n",
        " Short line . \n",
        " He appeared on a 2006 episode of the television series , Doctors , followed by a role in the 2007 "
        "theatre production of How to Curse directed by Josie Rourke . \n",
    ]
)


def save_checkpoint(path, architecture: str) -> None:
    """A tiny checkpoint of the architecture with a byte-level BPE tokenizer, as from_pretrained reads it."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from iml_hf.text_lm import train_tokenizer

    tokenizer = train_tokenizer(WIKITEXT * 3, vocab_size=300)
    size = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    torch.manual_seed(0)
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=16, n_head=2, n_positions=128, **size))
    elif architecture == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                num_hidden_layers=3,
                hidden_size=16,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=128,
                **size,
            )
        )
    else:
        model = GPTNeoXForCausalLM(
            GPTNeoXConfig(
                num_hidden_layers=3,
                hidden_size=16,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=128,
                **size,
            )
        )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neox"])
def test_paper_corpus_on_saved_checkpoints_with_device_map(architecture, tmp_path, capsys):
    """A local copy of Wikitext-103's test file, read as the paper filters it, on a saved tiny
    checkpoint loaded with --device_map auto: GPT-2 gets Table 2, the gated / rotary ones a reason."""
    save_checkpoint(tmp_path / "model", architecture)
    (tmp_path / "wiki.test.raw").write_text(WIKITEXT)
    out = tmp_path / "out"
    assert (
        main(
            [
                "layers",
                "--model",
                str(tmp_path / "model"),
                "--corpus",
                "wikitext-103",
                "--data",
                str(tmp_path / "wiki.test.raw"),
                "--output_dir",
                str(out),
                "--device_map",
                "auto",
                "--linear_model_tokens",
                "4",
                "--max_final_loss",
                "100",
            ]
        )
        == 0
    )
    summary = json.loads((out / "layers.json").read_text())
    assert summary["corpus"] == "wikitext-103" and summary["sequences"] == 3  # the rows of >= 10 words
    assert summary["tokens"] > 0 and summary["pca"]["samples"] > 0
    assert summary["norm_statistics"]["table1"]["chance_sequence_level"] == 0.25
    linear = summary["linear_model"]
    printed = capsys.readouterr().out
    if architecture == "gpt2":
        assert linear["tokens"] == 4 and linear["table2"]["matrices"] == 8
        assert summary["pca"]["requested"] == 50  # the paper's count for GPT-2, capped by the tokens there are
    else:
        assert ("gated FFN" if architecture == "llama" else "rotary") in linear["skipped"]
        assert "Table 2 skipped" in printed and summary["pca"]["requested"] == 150


def test_bfloat16_weights_give_float_statistics_close_to_float32(tmp_path):
    save_checkpoint(tmp_path / "model", "gpt2")
    (tmp_path / "wiki.test.raw").write_text(WIKITEXT)
    results = {}
    for dtype in ("float32", "bfloat16"):
        assert (
            main(
                [
                    "layers",
                    "--model",
                    str(tmp_path / "model"),
                    "--corpus",
                    "wikitext-103",
                    "--data",
                    str(tmp_path / "wiki.test.raw"),
                    "--output_dir",
                    str(tmp_path / dtype),
                    "--dtype",
                    dtype,
                    "--linear_model_tokens",
                    "3",
                    "--max_final_loss",
                    "100",
                ]
            )
            == 0
        )
        results[dtype] = json.loads((tmp_path / dtype / "layers.json").read_text())
    assert results["bfloat16"]["dtype"] == "bfloat16"
    assert results["bfloat16"]["norms"]["mean"] == pytest.approx(results["float32"]["norms"]["mean"], rel=0.02)
    assert results["bfloat16"]["norms"]["mean"] != results["float32"]["norms"]["mean"]  # the weights really were bf16


def test_device_and_device_map_together_are_refused(tmp_path, capsys):
    save_checkpoint(tmp_path / "model", "gpt2")
    assert (
        main(
            [
                "layers",
                "--model",
                str(tmp_path / "model"),
                "--corpus",
                "1bw",
                "--output_dir",
                str(tmp_path / "x"),
                "--device",
                "cpu",
                "--device_map",
                "auto",
            ]
        )
        == 2
    )
    assert "not both" in capsys.readouterr().err and not (tmp_path / "x").exists()
