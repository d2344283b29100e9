"""The layer analysis at every stage end equals the CLI's analysis of the saved model."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_RECIPE, run_recipe

from iml_hf.analyze import main as analyze
from iml_hf.config import parse_recipe
from iml_hf.data.corpus import load_or_build_corpus


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
        monkeypatch,
        tmp_path,
        model={**TINY_RECIPE["model"], "num_layers": 3},
        layer_analysis={
            "enabled": True,
            "min_position": 1,
            "max_tokens": 200,
            "linear_model_tokens": 3,
            "max_final_loss": 100.0,
        },
    )
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "layers").iterdir()) == ["0-pretrain", "1-x1", "2-x2"]
    final = json.loads((run / "layers" / "2-x2" / "layers.json").read_text())
    assert results["stages"]["x2"]["layers"]["inner_loss"] == final["inner_loss"]

    corpus = load_or_build_corpus(parse_recipe([str(path)]).task, 0)
    corpus.save_to_disk(str(tmp_path / "corpus"))
    assert (
        analyze(
            [
                "layers",
                "--model",
                str(run),
                "--data",
                str(tmp_path / "corpus"),
                "--output_dir",
                str(tmp_path / "cli"),
                "--min_position",
                "1",
                "--max_tokens",
                "200",
                "--linear_model_tokens",
                "3",
                "--batch_size",
                "64",
                "--max_final_loss",
                "100",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "cli" / "layers.json").read_text())
    for key in ("inner_loss", "norms", "norm_statistics", "linear_model", "tokens", "pca"):
        assert _close(cli[key], final[key]), key

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {r["metric"]: r["value"] for r in rows if r["stage"] == "x2" and r["metric"].startswith("inner_loss/")}
    assert list(logged) == ["inner_loss/embeddings", "inner_loss/layer_1", "inner_loss/layer_2"]
    assert list(logged.values()) == final["inner_loss"]["mean"]
    paper = {r["metric"]: r["value"] for r in rows if r["stage"] == "x2" and r["metric"].startswith("table")}
    assert paper["table1/sequence_level"] == final["norm_statistics"]["table1"]["sequence_level"]
    assert paper["table1/chance_sequence_level"] == 0.25  # 3 layers: embeddings .. layer 2, two pairs
    assert paper["table2/proposition_1"] == final["linear_model"]["table2"]["proposition_1"]


def test_an_analysis_that_cannot_run_does_not_stop_training(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise ValueError("--min_position is past every sequence")

    monkeypatch.setattr("iml_hf.analysis.layer_report.analyze_model", refuse)
    results, _ = run_recipe(
        monkeypatch,
        tmp_path,
        stages=TINY_RECIPE["stages"][:1],
        layer_analysis={"enabled": True, "linear_model_tokens": 0},
    )
    assert "layer_analysis.min_position is past" in results["stages"]["pretrain"]["layers"]["skipped"]
    assert (tmp_path / "run" / "results.json").exists()
