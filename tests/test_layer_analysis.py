"""The layer analysis at every stage end equals the CLI's analysis of the saved model."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_RECIPE, run_recipe

from iml_hf.analyze.__main__ import main as analyze
from iml_hf.corpus import load_or_build_corpus
from iml_hf.recipe import parse_recipe


def _close(a, b) -> bool:
    """Equal structure, numbers equal to 1e-5 (the CLI reloads the saved float32 weights)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, abs=1e-5)
    return a == b


def test_stage_end_analysis_matches_the_cli_on_the_saved_model(monkeypatch, tmp_path):
    results, path = run_recipe(
        monkeypatch, tmp_path, model={**TINY_RECIPE["model"], "num_layers": 3},
        layer_analysis={"enabled": True, "min_position": 1, "max_tokens": 200, "linearize_tokens": 3},
    )
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "layers").iterdir()) == ["0-pretrain", "1-x1", "2-x2"]
    final = json.loads((run / "layers" / "2-x2" / "layers.json").read_text())
    assert results["stages"]["x2"]["layers"]["inner_loss"] == final["inner_loss"]

    corpus = load_or_build_corpus(parse_recipe([str(path)]).task, 0)
    corpus.save_to_disk(str(tmp_path / "corpus"))
    assert analyze(["layers", "--model", str(run), "--data", str(tmp_path / "corpus"), "--output_dir",
                    str(tmp_path / "cli"), "--min_position", "1", "--max_tokens", "200", "--linearize_tokens", "3",
                    "--batch_size", "64"]) == 0
    cli = json.loads((tmp_path / "cli" / "layers.json").read_text())
    for key in ("inner_loss", "norms", "norm_statistics", "linearized_layers", "tokens", "inner_loss_tokens"):
        assert _close(cli[key], final[key]), key

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {r["metric"]: r["value"] for r in rows if r["stage"] == "x2" and r["metric"].startswith("inner_loss/")}
    assert list(logged) == ["inner_loss/embeddings", "inner_loss/layer_1", "inner_loss/layer_2"]
    assert list(logged.values()) == final["inner_loss"]["mean"]


def test_an_analysis_that_cannot_run_does_not_stop_training(monkeypatch, tmp_path):
    results, _ = run_recipe(monkeypatch, tmp_path, stages=TINY_RECIPE["stages"][:1],
                            layer_analysis={"enabled": True, "max_final_loss": 0.0, "linearize_tokens": 0})
    assert "layer_analysis.max_final_loss" in results["stages"]["pretrain"]["layers"]["skipped"]
    assert (tmp_path / "run" / "results.json").exists()
