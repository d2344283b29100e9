"""The report: intervals and tests against scipy on synthetic runs, and a render of a real sweep."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_RECIPE
from scipy import stats

from iml_hf import report, sweep
from iml_hf.reporting.runs import load_runs
from iml_hf.tasks.modmul import ModMulTask

SUBSETS = ("pretrain", "x1t", "x1f", "x2t", "x2f")


def _fake_run(folder, seed, em_by_stage, overrides=None):
    """A run folder as the pipeline writes it: results.json plus metrics.jsonl rows."""
    folder.mkdir(parents=True)
    stages = {name: {"em": em, "steps": 10, "wall_time_s": 1.0} for name, em in em_by_stage.items()}
    final = em_by_stage["x2"]
    results = {
        "final_em": final,
        "iml_gap": final["x2t"] - final["x2f"],
        "stages": stages,
        "wall_time_s": 3.0,
        "recipe": {"seed": seed, "task": dataclasses.asdict(ModMulTask(modulus=8))},
    }
    (folder / "results.json").write_text(json.dumps(results))
    rows = []
    for index, (stage, em) in enumerate(em_by_stage.items()):
        rows += [
            {
                "stage": stage,
                "stage_index": index,
                "stage_step": 10,
                "global_step": 10 * (index + 1),
                "subset": s,
                "metric": "em",
                "value": v,
            }
            for s, v in em.items()
        ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _synthetic(root, seeds, rng, shift=0.0):
    values = {}
    for seed in seeds:
        ems = {stage: {s: float(rng.uniform(0, 1)) for s in SUBSETS} for stage in ("pretrain", "x1", "x2")}
        ems["x2"]["x2t"] = min(1.0, ems["x2"]["x2f"] + shift + float(rng.normal(0, 0.05)))
        _fake_run(root / f"seed{seed}", seed, ems)
        values[seed] = ems
    return values


def test_intervals_and_paired_test_agree_with_scipy(tmp_path):
    rng = np.random.default_rng(0)
    values = _synthetic(tmp_path, range(6), rng, shift=0.05)
    summary = report.build_report(tmp_path)
    group = summary["groups"]["all runs"]
    assert group["seeds"] == list(range(6))
    x2t = np.array([values[s]["x2"]["x2t"] for s in range(6)])
    x2f = np.array([values[s]["x2"]["x2f"] for s in range(6)])
    expected = stats.ttest_rel(x2t, x2f, alternative="greater")
    diff = x2t - x2f
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    text = (tmp_path / "summary.md").read_text()
    gap = group["contrasts"]["iml_gap"]["x2"]
    assert gap["per_run"] == {f"seed{s}": pytest.approx(d) for s, d in zip(range(6), diff)}
    assert gap["p_value"] == pytest.approx(expected.pvalue) and gap["t"] == pytest.approx(expected.statistic)
    assert (gap["mean"], gap["ci_low"], gap["ci_high"]) == pytest.approx((diff.mean(), low, high))
    x1t_x1f = group["contrasts"]["x1_gap"]  # every contrast of the task, at every stage end
    assert set(x1t_x1f) == {"pretrain", "x1", "x2"}
    assert x1t_x1f["pretrain"]["mean"] == pytest.approx(
        np.mean([values[s]["pretrain"]["x1t"] - values[s]["pretrain"]["x1f"] for s in range(6)])
    )
    x1t_pretrain = np.array([values[s]["pretrain"]["x1t"] for s in range(6)])
    cell = group["em"]["pretrain"]["x1t"]
    low, high = stats.t.interval(0.95, 5, loc=x1t_pretrain.mean(), scale=stats.sem(x1t_pretrain))
    assert (cell["mean"], cell["ci_low"], cell["ci_high"]) == pytest.approx((x1t_pretrain.mean(), low, high))
    assert list(group["em"]["x2"]) == list(SUBSETS)  # the task's subset order
    assert (
        f"| iml_gap (x2t - x2f) | x2 | {diff.mean():+.3f} [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}] | {expected.statistic:.2f} | {expected.pvalue:.4g} | 6 |"
        in text
    )
    assert (tmp_path / "em_curves.png").exists()


def test_groups_follow_the_manifest_and_missing_runs_are_listed(tmp_path):
    rng = np.random.default_rng(1)
    runs = []
    for value in (1, 2):
        for seed in (0, 1, 2):
            name = f"stages.x2.max_steps={value}/seed{seed}"
            ems = {stage: {s: float(rng.uniform(0, 1)) for s in SUBSETS} for stage in ("pretrain", "x1", "x2")}
            _fake_run(tmp_path / name, seed, ems)
            runs.append({"name": name, "overrides": {"stages.x2.max_steps": value}, "status": "done", "log": ""})
    runs.append(
        {
            "name": "stages.x2.max_steps=2/seed3",
            "overrides": {"stages.x2.max_steps": 2},
            "status": "failed",
            "log": "x.log",
        }
    )
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    summary = report.build_report(tmp_path, confidence=0.9)
    assert list(summary["groups"]) == ["stages.x2.max_steps=1", "stages.x2.max_steps=2"]
    assert all(g["runs"] == 3 for g in summary["groups"].values())
    assert summary["missing_runs"] == ["stages.x2.max_steps=2/seed3: no results.json (status failed, log x.log)"]
    assert (tmp_path / "em_curves_g0.png").exists() and (tmp_path / "em_curves_g1.png").exists()
    group = summary["groups"]["stages.x2.max_steps=2"]
    runs_2 = [r for r in runs if r["overrides"]["stages.x2.max_steps"] == 2 and r["status"] == "done"]
    finals = [json.loads((tmp_path / r["name"] / "results.json").read_text())["final_em"] for r in runs_2]
    diff = np.array([f["x2t"] - f["x2f"] for f in finals])
    low, high = stats.t.interval(0.9, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    gap = group["contrasts"]["iml_gap"]["x2"]
    assert (gap["ci_low"], gap["ci_high"]) == pytest.approx((low, high))
    assert f"[{low:+.3f}, {high:+.3f}]" in (tmp_path / "summary.md").read_text()


def test_report_of_a_real_tiny_sweep(tmp_path, capsys):
    recipe = {
        **TINY_RECIPE,
        "gradient_alignment": {"enabled": True, "interval": 3, "aliases_per_subset": 2, "questions_per_alias": 2},
        "embedding_geometry": {"enabled": True, "plots": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "sweep"
    assert sweep.main([str(path), "--seeds", "2", "--output_dir", str(out), "--jobs", "2", "--threads", "1"]) == 0
    assert report.main([str(out)]) == 0
    assert "iml_gap at the end of x2" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["groups"]["all runs"]
    assert summary["runs"] == 2 and set(summary["grad_align"]["at_stage_end"]["x1"]) == {"x1t", "x1f", "x2t", "x2f"}
    assert set(summary["embedding"]["at_stage_end"]["x2"]) == {"x1t", "x1f", "x2t", "x2f"}
    text = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"em_curves.png", "grad_align.png", "embedding.png", "embeddings_2-x2.png"} <= set(images)
    assert all((out / image).stat().st_size > 1000 for image in images)


def test_without_a_manifest_runs_of_different_recipes_are_not_pooled(tmp_path):
    rng = np.random.default_rng(2)
    for modulus in (8, 12):
        for seed in (0, 1):
            ems = {stage: {s: float(rng.uniform(0, 1)) for s in SUBSETS} for stage in ("pretrain", "x1", "x2")}
            folder = tmp_path / f"m{modulus}" / f"s{seed}"
            _fake_run(folder, seed, ems)
            results = json.loads((folder / "results.json").read_text())
            results["recipe"]["task"]["modulus"] = modulus
            results["recipe"]["output_dir"] = str(folder)
            (folder / "results.json").write_text(json.dumps(results))
    summary = report.build_report(tmp_path)
    assert sorted(summary["groups"]) == ["task.modulus=12", "task.modulus=8"]
    assert all(g["runs"] == 2 for g in summary["groups"].values())


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def _runs(root, seeds, seed_rng=3):
    rng = np.random.default_rng(seed_rng)
    for seed in seeds:
        _fake_run(
            root / f"seed{seed}",
            seed,
            {stage: {s: float(rng.uniform(0, 1)) for s in SUBSETS} for stage in ("pretrain", "x1", "x2")},
        )


def test_bad_runs_are_skipped_and_named_and_a_cut_off_last_metrics_line_is_noted(tmp_path, capsys):
    _runs(tmp_path, range(6))
    (tmp_path / "seed3" / "results.json").write_text('{"final_em": {"x2t": 0.5')  # a corrupt file
    (tmp_path / "seed4" / "results.json").write_text("{}")
    results = json.loads((tmp_path / "seed5" / "results.json").read_text())
    del results["stages"]
    (tmp_path / "seed5" / "results.json").write_text(json.dumps(results))
    metrics = tmp_path / "seed1" / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"stage": "x2", "glo')  # a killed writer's partial last line
    middle = tmp_path / "seed2" / "metrics.jsonl"
    lines = middle.read_text().splitlines()
    middle.write_text("\n".join([*lines[:3], "garbage", *lines[3:]]) + "\n")  # not a cut-off: the run is bad

    assert report.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    expected = {
        "seed3/results.json": "not valid JSON",
        "seed4/results.json": "missing required key(s) recipe, stages, wall_time_s (the file is {})",
        "seed5/results.json": "missing required key(s) stages",
        "seed2/metrics.jsonl": "line 4 is not a JSON object",
    }
    summary = json.loads((tmp_path / "summary.json").read_text())
    bad = {str(Path(b["path"]).relative_to(tmp_path)): b["reason"] for b in summary["bad_runs"]}
    assert set(bad) == set(expected)
    texts = [err, (tmp_path / "report.md").read_text(), (tmp_path / "summary.md").read_text()]
    for file, reason in expected.items():
        assert reason in bad[file]
        assert all(f"{tmp_path / file}" in text and reason in text for text in texts)
    note = f"{metrics}: skipped its last line {len(whole.splitlines()) + 1}, cut off"
    assert summary["notes"][0].startswith(note) and all(note in text for text in texts)
    group = summary["groups"]["all runs"]
    assert group["seeds"] == [0, 1]  # only the usable runs count
    assert len(load_runs(tmp_path).runs[1].rows) == len(whole.splitlines())


def test_only_bad_runs_is_an_error_naming_them(tmp_path, capsys):
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "results.json").write_text("{}")
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no finished runs" in err and f"{tmp_path / 'seed0' / 'results.json'}: missing required key(s)" in err


def test_two_copies_of_one_run_are_refused_not_counted_twice(tmp_path, capsys):
    _runs(tmp_path / "sweep", range(3))
    shutil.copytree(tmp_path / "sweep" / "seed1", tmp_path / "backup" / "seed1")
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'backup' / 'seed1'} and {tmp_path / 'sweep' / 'seed1'} are both seed 1" in err
    assert "no run counts twice" in err and not (tmp_path / "summary.json").exists()
    # in a sweep folder too: a manifest naming two folders that hold the same seed and configuration
    runs = [{"name": n, "overrides": {}, "status": "done", "log": ""} for n in ("sweep/seed1", "backup/seed1")]
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    assert report.main([str(tmp_path)]) == 2 and "are both seed 1" in capsys.readouterr().err


def test_runs_recorded_before_a_key_existed_pool_with_runs_at_its_default(tmp_path):
    _runs(tmp_path, range(4))
    for seed, value in ((2, 1024), (3, 1024)):  # newer runs record evaluation.batch_size at its default
        path = tmp_path / f"seed{seed}" / "results.json"
        results = json.loads(path.read_text())
        results["recipe"]["evaluation"] = {"batch_size": value}
        path.write_text(json.dumps(results))
    assert list(report.build_report(tmp_path)["groups"]) == ["all runs"]
    path = tmp_path / "seed3" / "results.json"
    results = json.loads(path.read_text())
    results["recipe"]["evaluation"] = {"batch_size": 512}  # not the default: another configuration
    path.write_text(json.dumps(results))
    groups = report.build_report(tmp_path)["groups"]
    assert {label: g["seeds"] for label, g in groups.items()} == {
        "evaluation.batch_size=1024": [0, 1, 2],
        "evaluation.batch_size=512": [3],
    }


def test_a_corrupt_manifest_or_confidence_is_a_clear_error(tmp_path, capsys):
    _runs(tmp_path, range(2))
    (tmp_path / "sweep.json").write_text('{"runs": [')
    assert report.main([str(tmp_path)]) == 2
    assert f"{tmp_path / 'sweep.json'} is not a readable sweep manifest" in capsys.readouterr().err
    assert report.main([str(tmp_path), "--confidence", "95"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _png_width(path):
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_report_files_figures_in_three_formats_strict_json_tables_and_provenance(tmp_path, capsys):
    rng = np.random.default_rng(5)
    _synthetic(tmp_path / "runs", range(3), rng, shift=0.05)
    # one run records its provenance, as results.json now does; the others are older runs
    first = tmp_path / "runs" / "seed0" / "results.json"
    results = json.loads(first.read_text())
    results["provenance"] = {
        "git": {"commit": "abc1234def", "dirty": False},
        "versions": {"torch": "2.0"},
        "date": "2026-01-01T00:00:00+00:00",
        "command": "python -m iml_hf.train toy.yaml",
    }
    first.write_text(json.dumps(results))
    out = tmp_path / "docs"
    assert report.main([str(tmp_path / "runs"), "--report_dir", str(out), "--dpi", "60"]) == 0
    assert not (tmp_path / "runs" / "report.md").exists()  # the runs' folder is left as it was
    for suffix in ("png", "pdf", "svg"):
        assert (out / f"em_curves.{suffix}").stat().st_size > 0
    assert report.main([str(tmp_path / "runs"), "--report_dir", str(tmp_path / "hi"), "--dpi", "120"]) == 0
    assert _png_width(tmp_path / "hi" / "em_curves.png") / _png_width(out / "em_curves.png") == pytest.approx(
        2, rel=0.03
    )
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["provenance"]["versions"]["iml_hf"] and "iml_hf.report" in summary["provenance"]["command"]
    assert summary["runs_provenance"]["recorded"] == 1 and summary["runs_provenance"]["runs"] == 3
    text = (out / "report.md").read_text()
    assert "Report made with: " in text and "1 of 3 runs recorded it; 2 older runs did not" in text
    assert "commit abc1234def" in text
    assert re.search(r"\*Figure 1\.1\* .*n = 3 seeds; bands: 95% t-intervals over seeds", text)
    # every Markdown table is also CSV and LaTeX with the same cells
    from iml_hf.reporting.tables import markdown_tables

    tables = markdown_tables((out / "summary.md").read_text().splitlines())
    assert [t.title.split()[0] for t in tables] == ["Contrasts", "Exact"]
    for table, name in zip(tables, ("contrasts", "exact_match")):
        csv = (out / "tables" / f"{name}.csv").read_text().splitlines()
        assert csv[0].split(",") == table.header
        assert [row for row in csv[1:]] == [",".join(f'"{c}"' if "," in c else c for c in row) for row in table.rows]
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex
        for row in table.rows:
            assert " & ".join(c.replace("_", "\\_") for c in row) + " \\\\" in tex
        assert f"(also as [CSV](tables/{name}.csv) and [LaTeX](tables/{name}.tex))" in text


def test_a_nan_statistic_is_null_in_summary_json(tmp_path):
    rng = np.random.default_rng(6)
    _synthetic(tmp_path, [0], rng)  # one seed: no interval, no t-test
    summary = report.build_report(tmp_path)
    assert math.isnan(summary["groups"]["all runs"]["contrasts"]["iml_gap"]["x2"]["t"])
    written = _strict_json((tmp_path / "summary.json").read_text())
    assert written["groups"]["all runs"]["contrasts"]["iml_gap"]["x2"]["t"] is None


def test_null_values_from_strict_json_are_read_as_not_measured(tmp_path):
    rng = np.random.default_rng(7)
    _synthetic(tmp_path, range(3), rng, shift=0.05)
    path = tmp_path / "seed0" / "results.json"
    results = json.loads(path.read_text())
    results["stages"]["x2"]["em"]["x2f"] = None  # a NaN the pipeline wrote as null
    path.write_text(json.dumps(results))
    with (tmp_path / "seed0" / "metrics.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "stage": "x2",
                    "stage_index": 2,
                    "stage_step": 10,
                    "global_step": 30,
                    "subset": "x2t",
                    "metric": "em",
                    "value": None,
                }
            )
            + "\n"
        )
    summary = report.build_report(tmp_path)
    cell = summary["groups"]["all runs"]["em"]["x2"]["x2f"]
    assert cell["n"] == 2  # the null is left out, not counted as a value
    assert summary["groups"]["all runs"]["contrasts"]["iml_gap"]["x2"]["n"] == 2  # and so is its pair
    assert (tmp_path / "em_curves.png").exists()
