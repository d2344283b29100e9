"""The interpretability gate: a reliability contrast is read only where some side rose above its
no-definition level (``iml_hf.reporting.gate``), in the report, through the task's declared baselines."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from iml_hf import report
from iml_hf.reporting.gate import INTERPRETABLE, NOT_INTERPRETABLE, gate, verdict
from iml_hf.tasks.entities import EntitiesTask


def _entity_run(folder, seed: int, em: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    task = EntitiesTask()
    results = {
        "stages": {"stage2": {"em": em, "steps": 10, "wall_time_s": 1.0}},
        "wall_time_s": 1.0,
        "subsets": list(task.subsets),
        "contrast_sets": [[n, a, b] for n, (a, b) in task.contrasts.items()],
        "recipe": {"seed": seed, "task": dataclasses.asdict(task)},
    }
    (folder / "results.json").write_text(json.dumps(results))


def _sweep(root, rise_d1: float, rise_d2: float, seeds: int = 6) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(0)
    ems = {}
    for seed in range(seeds):
        base = float(rng.uniform(0.10, 0.15))
        em = {
            "no_qd_baseline": base,
            "d1consis": base + rise_d1 + float(rng.normal(0, 0.01)),
            "d2consis": base + rise_d2 + float(rng.normal(0, 0.01)),
            "train_question_knowledge": 0.9,
            "q_no_replacement_baseline": 0.3,
        }
        _entity_run(root / f"seed{seed}", seed, em)
        ems[seed] = em
    return ems


def test_neither_side_rose_the_contrast_is_not_interpretable(tmp_path, capsys):
    _sweep(tmp_path, 0.0, 0.0)
    summary = report.build_report(tmp_path)
    group = summary["groups"]["all runs"]
    assert group["gate"]["contrasts"]["stage2_d1_vs_d2"]["stage2"]["verdict"] == NOT_INTERPRETABLE
    text = (tmp_path / "report.md").read_text()
    row = next(
        line for line in text.splitlines() if line.startswith("| stage2_d1_vs_d2 (d1consis - d2consis) | stage2")
    )
    assert NOT_INTERPRETABLE in row
    assert "Base task" in text and "train_question_knowledge" in text
    report.main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "stage2_d1_vs_d2 at the end of stage2 +0.0" in printed and NOT_INTERPRETABLE in printed


def test_one_side_rose_the_contrast_is_read_as_usual(tmp_path):
    ems = _sweep(tmp_path, 0.15, 0.01)
    group = report.build_report(tmp_path)["groups"]["all runs"]
    entry = group["gate"]["contrasts"]["stage2_d1_vs_d2"]["stage2"]
    assert entry["verdict"] == INTERPRETABLE
    rises = np.array([ems[s]["d1consis"] - ems[s]["no_qd_baseline"] for s in sorted(ems)])
    low, high = stats.t.interval(0.95, len(rises) - 1, loc=rises.mean(), scale=stats.sem(rises))
    assert entry["rises"]["d1consis"]["mean"] == pytest.approx(rises.mean())
    assert entry["rises"]["d1consis"]["ci_low"] == pytest.approx(low)
    assert entry["rises"]["d1consis"]["ci_high"] == pytest.approx(high)
    row = next(
        line
        for line in (tmp_path / "report.md").read_text().splitlines()
        if line.startswith("| stage2_d1_vs_d2 (d1consis - d2consis) | stage2")
    )
    assert NOT_INTERPRETABLE not in row and float(row.split("|")[5]) < 0.05  # the p value is shown


def test_a_chance_baseline_and_a_missing_baseline_set():
    units = [(s, None, {"d1consis": 0.6 + 0.01 * s, "d2consis": 0.5}) for s in range(4)]
    assert gate(units, {"d1consis": 0.5, "d2consis": 0.5})["verdict"] == INTERPRETABLE
    assert gate(units, {"d1consis": "no_qd_baseline", "d2consis": "no_qd_baseline"}) is None  # never evaluated
    assert verdict({"a": {"ci_low": None}, "b": {"ci_low": float("nan")}}) == NOT_INTERPRETABLE


def test_the_model_card_marks_a_single_runs_uninterpretable_contrast():
    from iml_hf.reporting.model_card import contrast_table

    task = EntitiesTask()

    def results(d1: float) -> dict:
        em = {"d1consis": d1, "d2consis": 0.12, "no_qd_baseline": 0.12}
        stage = {"em": em, "n": {k: 360 for k in em}, "contrasts": {"stage2_d1_vs_d2": d1 - 0.12}}
        return {
            "stages": {"stage2": stage},
            "contrast_sets": [["stage2_d1_vs_d2", "d1consis", "d2consis"]],
            "recipe": {"task": dataclasses.asdict(task)},
        }

    assert NOT_INTERPRETABLE in contrast_table(results(0.13))
    assert NOT_INTERPRETABLE not in contrast_table(results(0.30))  # d1consis rose well above no_qd_baseline
