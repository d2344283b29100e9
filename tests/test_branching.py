"""Branching stages: a trunk once, the branch stage K times from its weights, each a resumable run.

The runs train on CPU with one thread, so a branch that keeps the task's own split (branch 0)
must reproduce the plain run's branch stage exactly, and a killed branch must resume to the same
numbers as one that was never killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE, kill_train_when

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.train import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

BRANCH_RECIPE = {
    **TINY_RECIPE,
    "checkpoint_steps": 5,
    "evaluation": {"eval_steps": 5},
    "stages": [
        {**TINY_RECIPE["stages"][0], "max_steps": 10},
        {**TINY_RECIPE["stages"][1], "max_steps": 10},
        {**TINY_RECIPE["stages"][2], "max_steps": 30},
    ],
}


def _write(tmp_path: Path, name: str = "recipe.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BRANCH_RECIPE, **changes}, sort_keys=False))
    return path


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _rows(folder: Path, stage_index: int) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["stage_index"] == stage_index]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A plain run and a run with 2 branches of the same recipe and seed."""
    tmp = tmp_path_factory.mktemp("branching")
    main([str(_write(tmp, "plain.yaml", output_dir=str(tmp / "plain")))])
    main([str(_write(tmp, "branched.yaml", output_dir=str(tmp / "branched"), branches=2))])
    return {"plain": tmp / "plain", "branched": tmp / "branched"}


def test_branch_0_reproduces_the_plain_runs_branch_stage_exactly(runs):
    plain, branch = _results(runs["plain"]), _results(runs["branched"] / "branch0")
    assert branch["stages"]["x2"]["em"] == plain["stages"]["x2"]["em"]
    assert branch["stages"]["x2"]["metrics"] == plain["stages"]["x2"]["metrics"]  # answer losses: continuous values
    assert branch["stages"]["x2"]["train_loss"] == plain["stages"]["x2"]["train_loss"]
    timeless = [{k: v for k, v in r.items()} for r in _rows(runs["branched"] / "branch0", 2) if r["stage_step"] > 0]
    assert timeless == _rows(runs["plain"], 2)
    assert (runs["branched"] / "branch0" / "model.safetensors").read_bytes() == (
        runs["plain"] / "model.safetensors"
    ).read_bytes()
    # the branch's start is the trunk's end: the same weights on the same split
    assert branch["stages"]["x2"]["em_start"] == plain["stages"]["x1"]["em"]


def test_the_trunk_runs_once_and_branches_record_its_shared_stages(runs):
    trunk = _results(runs["branched"] / "trunk")
    assert list(trunk["stages"]) == ["pretrain", "x1"]
    for b in (0, 1):
        branch = _results(runs["branched"] / f"branch{b}")
        assert branch["branch"]["index"] == b and branch["recipe"]["task"]["branch"] == b
        for stage in ("pretrain", "x1"):
            entry = branch["stages"][stage]
            assert entry["shared_trunk"] is True
            assert entry["steps"] == trunk["stages"][stage]["steps"]
            # the sets a branch re-splits were measured on the trunk's split: not carried over
            assert set(entry["em"]) == set(trunk["stages"][stage]["em"]) - {"x2t", "x2f"}
            assert all(entry["em"][s] == trunk["stages"][stage]["em"][s] for s in entry["em"])
        assert "shared_trunk" not in branch["stages"]["x2"]


def test_a_counterbalanced_pair_exchanges_the_halves_at_its_start(runs):
    """Branch 1 trains X2 on branch 0's split with the halves exchanged: at the stage's start (the
    same trunk weights) its x2t is branch 0's x2f and the other way round."""
    b0, b1 = (_results(runs["branched"] / f"branch{b}")["stages"]["x2"]["em_start"] for b in (0, 1))
    assert (b1["x2t"], b1["x2f"]) == (b0["x2f"], b0["x2t"])
    assert _results(runs["branched"] / "branch1")["stages"]["x2"]["contrasts_start"]["iml_gap"] == pytest.approx(
        -_results(runs["branched"] / "branch0")["stages"]["x2"]["contrasts_start"]["iml_gap"]
    )


def test_a_rerun_skips_finished_branches_and_trains_nothing(runs, capsys):
    before = (runs["branched"] / "branch1" / "results.json").read_text()
    main([str(runs["branched"].parent / "branched.yaml")])
    assert "trunk:" not in capsys.readouterr().out
    assert (runs["branched"] / "branch1" / "results.json").read_text() == before


def test_a_branch_killed_inside_its_stage_resumes_to_the_same_results(tmp_path, runs):
    recipe = _write(tmp_path, output_dir=str(tmp_path / "run"), branches=2)
    work = tmp_path / "run" / "branch1.partial"

    def ready() -> bool:
        return any(
            int(p.name.split("-")[1]) >= 15 and (p / "resume.json").is_file()
            for p in (work / "checkpoints" / "x2").glob("checkpoint-*")
        )

    kill_train_when([recipe, "--only_branch=1"], ready)
    assert not (tmp_path / "run" / "branch1" / "results.json").exists()
    done = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", str(recipe), "--only_branch=1"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the run in" in done.stdout
    resumed, reference = _results(tmp_path / "run" / "branch1"), _results(runs["branched"] / "branch1")
    for key in ("em", "em_start", "metrics", "contrasts", "contrasts_start"):
        assert resumed["stages"]["x2"][key] == reference["stages"]["x2"][key]
    assert not (tmp_path / "run" / "branch0").exists()  # only the branch asked for


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"branches": 3}, "even number"),
        ({"branches": 2, "branch_stage": "x3"}, "did you mean 'x2'"),
        ({"branches": 2, "branch_stage": "pretrain"}, "first stage"),
        ({"branches": 2, "branch_stage": "x2", "only_branch": 2}, "only_branch=2"),
        ({"branch_stage": "x2"}, "only applies with branches"),
        (
            {
                "branches": 2,
                "stages": [*BRANCH_RECIPE["stages"][:2], {**BRANCH_RECIPE["stages"][2], "reset_optimizer": False}],
            },
            "reset_optimizer=false",
        ),
    ],
)
def test_bad_branch_settings_are_refused_at_parse_time(tmp_path, changes, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe([str(_write(tmp_path, output_dir=str(tmp_path / "run"), **changes))])


def test_a_bad_training_setting_of_the_branch_stage_stops_the_run_before_the_trunk(tmp_path, capsys):
    """TrainingArguments' own checks run for every stage before the trunk trains or a folder is written."""
    stages = [dict(s) for s in BRANCH_RECIPE["stages"]]
    stages[2]["lr_scheduler_type"] = "reduce_lr_on_plateau"  # needs an evaluation strategy: refused by transformers
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        main([str(_write(tmp_path, output_dir=str(out), branches=2, stages=stages))])
    assert stopped.value.code == 2
    assert "stage 'x2': invalid training arguments" in capsys.readouterr().err
    assert not list(tmp_path.glob("run*")) and not out.exists()


def test_a_stage_before_the_branch_that_trains_an_exchangeable_subset_is_refused(tmp_path):
    stages = [dict(s) for s in BRANCH_RECIPE["stages"]]
    stages[1]["replay"] = {"x2t": 0.1}
    with pytest.raises(RecipeError, match=r"stages.x1 trains on \['x2t'\]"):
        parse_recipe([str(_write(tmp_path, output_dir=str(tmp_path / "run"), branches=2, stages=stages))])


def test_a_finished_branched_run_summarizes_its_branches(runs):
    summary = json.loads((runs["branched"] / "branches.json").read_text())
    gap = summary["contrasts"]["iml_gap"]
    ends = [_results(runs["branched"] / f"branch{b}")["stages"]["x2"]["contrasts"]["iml_gap"] for b in (0, 1)]
    assert [gap["per_branch"][str(b)]["end"] for b in (0, 1)] == ends
    assert gap["mean"]["end"] == pytest.approx(sum(ends) / 2)
    assert "end - start" in (runs["branched"] / "README.md").read_text()


def test_a_finished_trunk_of_another_configuration_is_refused(runs, tmp_path, capsys):
    changed = {
        **BRANCH_RECIPE,
        "output_dir": str(runs["branched"]),
        "branches": 2,
        "stages": [
            BRANCH_RECIPE["stages"][0],
            {**BRANCH_RECIPE["stages"][1], "max_steps": 11},
            BRANCH_RECIPE["stages"][2],
        ],
    }
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    before = (runs["branched"] / "trunk" / "results.json").read_text()
    with pytest.raises(SystemExit) as exit_:
        main([str(path)])
    assert exit_.value.code == 2
    assert "holds a finished trunk of another configuration" in capsys.readouterr().err
    assert (runs["branched"] / "trunk" / "results.json").read_text() == before
