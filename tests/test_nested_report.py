"""The report of branched runs: numbers nested by seed, checked against a hand computation, and a
real tiny branched sweep through ``iml_hf.sweep`` and ``iml_hf.report``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml
from conftest import TINY_RECIPE
from scipy import stats

from iml_hf import report, sweep
from iml_hf.reporting.runs import DuplicateRuns
from iml_hf.tasks.modmul import ModMulTask

#: (seed, branch) -> (x2t - x2f at the stage's start, at its end); x1t/x1f fixed.
VALUES = {
    (0, 0): (0.10, 0.30),
    (0, 1): (-0.06, 0.10),
    (1, 0): (0.00, 0.20),
    (1, 1): (0.00, 0.00),
    (2, 0): (0.05, 0.15),
    (2, 1): (0.03, 0.25),
}


def _fake_branch(folder, seed, branch, start, end, readout_step=None):
    folder.mkdir(parents=True)
    shared = {"em": {"pretrain": 0.5, "x1t": 0.4, "x1f": 0.3}, "steps": 10, "wall_time_s": 5.0, "shared_trunk": True}
    em_start = {"pretrain": 0.5, "x1t": 0.4, "x1f": 0.3, "x2t": 0.5 + start, "x2f": 0.5}
    em_end = {"pretrain": 0.5, "x1t": 0.4, "x1f": 0.3, "x2t": 0.5 + end, "x2f": 0.5}
    stages = {
        "pretrain": shared,
        "x1": dict(shared),
        "x2": {"em": em_end, "em_start": em_start, "steps": 10, "wall_time_s": 2.0},
    }
    task = {**dataclasses.asdict(ModMulTask(modulus=8)), "branch": branch}
    results = {
        "stages": stages,
        "wall_time_s": 12.0,
        "subsets": list(ModMulTask.subsets),
        "contrast_sets": [["iml_gap", "x2t", "x2f"], ["x1_gap", "x1t", "x1f"]],
        "recipe": {"seed": seed, "task": task, "evaluation": {"readout_step": readout_step}},
    }
    (folder / "results.json").write_text(json.dumps(results))
    rows = []
    for step, em in ((0, em_start), (5, {**em_start, "x2t": 0.5 + (start + end) / 2}), (10, em_end)):
        rows += [
            {
                "stage": "x2",
                "stage_index": 2,
                "stage_step": step,
                "global_step": 20 + step,
                "family": "eval",
                "subset": s,
                "metric": "em",
                "value": v,
            }
            for s, v in em.items()
        ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _hand(values: dict[int, list[float]]) -> dict[str, float]:
    means = np.array([np.mean(v) for v in values.values()])
    n, mean, se = len(means), means.mean(), means.std(ddof=1) / np.sqrt(len(means))
    half = stats.t.ppf(0.975, n - 1) * se
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": stats.t.sf(mean / se, n - 1)}


def test_nested_numbers_match_a_hand_computation(tmp_path):
    for (seed, branch), (start, end) in VALUES.items():
        _fake_branch(tmp_path / f"seed{seed}" / f"branch{branch}", seed, branch, start, end)
    summary = report.build_report(tmp_path)
    assert list(summary["groups"]) == ["all runs"]  # branches of one recipe are one group
    nested = summary["groups"]["all runs"]["nested"]["iml_gap"]
    by_seed = lambda pick: {s: [pick(VALUES[(s, b)]) for b in (0, 1)] for s in (0, 1, 2)}  # noqa: E731
    for key, pick in (("readout", lambda v: v[1]), ("start", lambda v: v[0]), ("corrected", lambda v: v[1] - v[0])):
        hand = _hand(by_seed(pick))
        assert nested[key]["mean"] == pytest.approx(hand["mean"])
        assert nested[key]["ci_low"] == pytest.approx(hand["low"])
        assert nested[key]["ci_high"] == pytest.approx(hand["high"])
        assert nested[key]["p_value"] == pytest.approx(hand["p"])
        assert nested[key]["n"] == 3
    # variance components of the read-out: one-way ANOVA with 2 branches per seed
    ends = np.array([[VALUES[(s, b)][1] for b in (0, 1)] for s in (0, 1, 2)])
    ms_within = ((ends - ends.mean(1, keepdims=True)) ** 2).sum() / 3
    ms_between = 2 * ((ends.mean(1) - ends.mean()) ** 2).sum() / 2
    assert nested["variance"]["var_within"] == pytest.approx(ms_within)
    assert nested["variance"]["var_between"] == pytest.approx(max(0.0, (ms_between - ms_within) / 2))
    assert list(nested["curve"]) == [0, 5, 10]
    assert nested["curve"][10]["mean"] == pytest.approx(nested["readout"]["mean"])
    text = (tmp_path / "report.md").read_text()
    assert "read-out - start" in text and "contrast_curves.png" in text
    assert (tmp_path / "contrast_curves.png").stat().st_size > 0


def test_the_readout_step_the_recipe_declares_is_the_headline(tmp_path):
    for (seed, branch), (start, end) in VALUES.items():
        _fake_branch(tmp_path / f"seed{seed}" / f"branch{branch}", seed, branch, start, end, readout_step=5)
    nested = report.build_report(tmp_path)["groups"]["all runs"]["nested"]["iml_gap"]
    hand = _hand({s: [(VALUES[(s, b)][0] + VALUES[(s, b)][1]) / 2 for b in (0, 1)] for s in (0, 1, 2)})
    assert nested["readout"]["mean"] == pytest.approx(hand["mean"])
    assert nested["readout_step"] == 5


def test_a_copied_branch_is_refused(tmp_path):
    _fake_branch(tmp_path / "a" / "branch0", 0, 0, 0.0, 0.1)
    _fake_branch(tmp_path / "b" / "branch0", 0, 0, 0.0, 0.1)
    with pytest.raises(DuplicateRuns, match="branch 0"):
        report.build_report(tmp_path)


def test_a_real_branched_sweep_reports_nested_numbers(tmp_path):
    recipe = {**TINY_RECIPE, "branches": 2, "stages": [{**s, "max_steps": 6} for s in TINY_RECIPE["stages"]]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "sweep"
    assert sweep.main([str(path), "--seeds", "2", "--output_dir", str(out), "--jobs", "2", "--threads", "1"]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert sorted(r["name"] for r in manifest["runs"]) == [
        "seed0/branch0",
        "seed0/branch1",
        "seed1/branch0",
        "seed1/branch1",
    ]
    assert all(r["status"] == "done" for r in manifest["runs"])
    summary = report.build_report(out)
    group = summary["groups"]["all runs"]
    assert group["seeds"] == [0, 1] and group["branches"] == [0, 1]
    ends = {}
    for seed in (0, 1):
        for b in (0, 1):
            em = json.loads((out / f"seed{seed}" / f"branch{b}" / "results.json").read_text())["stages"]["x2"]["em"]
            ends.setdefault(seed, []).append(em["x2t"] - em["x2f"])
    assert group["nested"]["iml_gap"]["readout"]["mean"] == pytest.approx(np.mean([np.mean(v) for v in ends.values()]))
