"""End to end: a tiny three-stage recipe through ``main()`` with a patched argv."""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from iml_hf import train
from iml_hf.data.tokenization import encode_rows
from iml_hf.measure.exact_match import exact_match


def _run(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", *argv])
    return train.main()


def test_main_writes_results_metrics_and_a_loadable_model(monkeypatch, tiny_recipe, tmp_path):
    results = _run(monkeypatch, [str(tiny_recipe)])
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert list(saved["stages"]) == ["pretrain", "x1", "x2"]
    assert [saved["stages"][s]["steps"] for s in ("pretrain", "x1", "x2")] == [6, 4, 4]
    final = saved["final_em"]
    assert set(final) == {"pretrain", "x1t", "x1f", "x2t", "x2f"}
    assert saved["contrasts"]["iml_gap"] == final["x2t"] - final["x2f"]
    assert (
        saved["stages"]["x1"]["contrasts"]["x1_gap"]
        == saved["stages"]["x1"]["em"]["x1t"] - saved["stages"]["x1"]["em"]["x1f"]
    )
    assert saved["recipe"]["stages"][2]["learning_rate"] == 1e-3
    assert all(saved["stages"][s]["wall_time_s"] > 0 for s in saved["stages"])
    assert not (out / "checkpoints").exists()  # nothing was checkpointed, so no empty folders either

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["family"] for r in rows} == {"eval", "train"}  # training loss, gradient norm and lr too
    rows = [r for r in rows if r["family"] == "eval"]
    assert {r["metric"] for r in rows} == {"em", "loss"} and all(
        r["name"] == f"eval/{r['subset']}/{r['metric']}" for r in rows
    )
    rows = [r for r in rows if r["metric"] == "em"]
    # every 3 steps inside a stage plus the end of each stage, for 5 subsets
    points = sorted({(r["stage"], r["stage_step"]) for r in rows})
    assert points == [("pretrain", 3), ("pretrain", 6), ("x1", 3), ("x1", 4), ("x2", 3), ("x2", 4)]
    assert len(rows) == 5 * len(points)
    assert max(r["global_step"] for r in rows) == 14

    # the saved model and tokenizer load with the Auto classes and reproduce the final EM
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    from iml_hf.config import parse_recipe
    from iml_hf.data.corpus import load_or_build_corpus

    recipe = parse_recipe([str(tiny_recipe)])
    test = load_or_build_corpus(recipe.task, 0).filter(lambda r: r["subset"] == "x1t")["test"]
    encoded = encode_rows(tokenizer, list(test["prompt"]), list(test["answer"]))
    correct = exact_match(model, encoded["prompt_ids"], encoded["answer_ids"], tokenizer.pad_token_id)
    assert sum(correct) / len(correct) == final["x1t"]


def test_same_recipe_and_seed_give_same_metrics(monkeypatch, tiny_recipe, tmp_path):
    first = _run(monkeypatch, [str(tiny_recipe), f"--output_dir={tmp_path / 'a'}"])
    second = _run(monkeypatch, [str(tiny_recipe), f"--output_dir={tmp_path / 'b'}"])
    assert first["final_em"] == second["final_em"]
    assert first["stages"]["x2"]["train_loss"] == second["stages"]["x2"]["train_loss"]
    third = _run(monkeypatch, [str(tiny_recipe), f"--output_dir={tmp_path / 'c'}", "--seed=1"])
    assert third["corpus"]["fingerprint"] != first["corpus"]["fingerprint"]


def test_weights_carry_over_between_stages(monkeypatch, tiny_recipe, tmp_path):
    """A run whose last stage takes one step at lr 1e-12 (below float32 resolution for AdamW's
    ~lr-sized step; lr 0 is refused at parse time) ends with the weights the previous stage left."""
    base = _run(
        monkeypatch,
        [
            str(tiny_recipe),
            f"--output_dir={tmp_path / 'two'}",
            "--stages.x2.max_steps=1",
            "--stages.x2.learning_rate=1e-12",
            "--stages.x2.warmup_steps=0",
        ],
    )
    assert base["stages"]["x2"]["em"] == base["stages"]["x1"]["em"]
    assert base["stages"]["x1"]["em"] != base["stages"]["pretrain"]["em"] or base["stages"]["x1"]["train_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_summary_shows_n_full_stage_names_and_contrast_intervals():
    from iml_hf.reporting.model_card import contrast_interval

    stage = {
        "em": {"x2t": 0.5, "x2f": 0.25},
        "n": {"x2t": 400, "x2f": 400},
        "contrasts": {"iml_gap": 0.25},
        "wall_time_s": 1.0,
    }
    results = {
        "stages": {"pretrain": {**stage, "contrasts": {"iml_gap": 0.25}}, "a_long_stage_name_x2": stage},
        "contrast_sets": [["iml_gap", "x2t", "x2f"]],
        "wall_time_s": 2.0,
    }
    text = train.format_summary(results)
    low, high = contrast_interval(stage, "x2t", "x2f")
    assert "a_long_stage_name_x2" in text  # not cut to 12 characters
    assert any(line.split()[:2] == ["x2t", "400"] for line in text.splitlines())
    assert f"+0.250 [{low:+.3f}, {high:+.3f}]" in text and "95% interval" in text
    assert "(x2t - x2f)" in text
