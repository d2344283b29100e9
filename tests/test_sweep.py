"""Sweeps: the grid, resuming, failure isolation, thread division and the submitit launcher."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY_RECIPE

from iml_hf import sweep
from iml_hf.recipe import RecipeError


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    small = {**TINY_RECIPE, "evaluation": {"eval_steps": 0}}
    path.write_text(yaml.safe_dump(small, sort_keys=False))
    return str(path)


def _manifest(out):
    return json.loads((out / "sweep.json").read_text())


def test_plan_is_the_grid_times_seeds(recipe, tmp_path):
    runs = sweep.plan(recipe, str(tmp_path / "s"), [3, 4], {"task.modulus": [8, 12], "stages.x2.max_steps": [2]}, [], 1)
    assert [r.name for r in runs] == [
        "task.modulus=8,stages.x2.max_steps=2/seed3", "task.modulus=8,stages.x2.max_steps=2/seed4",
        "task.modulus=12,stages.x2.max_steps=2/seed3", "task.modulus=12,stages.x2.max_steps=2/seed4",
    ]
    assert runs[2].overrides == {"task.modulus": 12, "stages.x2.max_steps": 2}
    assert "--task.modulus=12" in runs[2].argv and "--seed=3" in runs[2].argv and "--torch_threads=1" in runs[2].argv
    assert sweep.parse_set("training.learning_rate=1.0e-3,3.0e-3") == ("training.learning_rate", [1e-3, 3e-3])
    with pytest.raises(RecipeError, match="did you mean"):
        sweep.plan(recipe, str(tmp_path / "s"), [0], {"task.modulos": [8]}, [], 1)


def test_bad_set_key_exits_2_and_writes_nothing(recipe, tmp_path, capsys):
    out = tmp_path / "never"
    code = sweep.main([recipe, "--seeds", "2", "--output_dir", str(out), "--set", "model.hiden_size=8,16"])
    assert code == 2 and not out.exists()
    assert "did you mean '--model.hidden_size'" in capsys.readouterr().err


def test_sweep_resumes_and_isolates_a_failing_run(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [recipe, "--seeds", "2", "--output_dir", str(out), "--jobs", "2", "--threads", "1",
            "--set", "model.model_name_or_path=null,/nonexistent/checkpoint"]
    assert sweep.main(args) == 1  # one combination fails, the other finishes
    manifest = _manifest(out)
    status = {r["name"]: r["status"] for r in manifest["runs"]}
    assert status == {
        "model.model_name_or_path=null/seed0": "done", "model.model_name_or_path=null/seed1": "done",
        "model.model_name_or_path=_nonexistent_checkpoint/seed0": "failed",
        "model.model_name_or_path=_nonexistent_checkpoint/seed1": "failed",
    }
    failed = next(r for r in manifest["runs"] if r["status"] == "failed")
    assert failed["returncode"] != 0 and "nonexistent" in (out / failed["name"] / "train.log").read_text()
    assert "failed: model.model_name_or_path=_nonexistent_checkpoint/seed0" in capsys.readouterr().out
    assert manifest["threads_per_run"] == 1 and manifest["jobs"] == 2

    done = out / "model.model_name_or_path=null/seed0" / "results.json"
    stamp = done.stat().st_mtime_ns
    (out / "model.model_name_or_path=null/seed1" / "results.json").unlink()
    ok_only = [recipe, "--seeds", "2", "--output_dir", str(out), "--jobs", "1", "--set", "model.model_name_or_path=null"]
    assert sweep.main(ok_only) == 0
    status = {r["name"]: r["status"] for r in _manifest(out)["runs"]}
    assert status == {  # the other combination's runs stay in the manifest, as they were
        "model.model_name_or_path=null/seed0": "skipped", "model.model_name_or_path=null/seed1": "done",
        "model.model_name_or_path=_nonexistent_checkpoint/seed0": "failed",
        "model.model_name_or_path=_nonexistent_checkpoint/seed1": "failed",
    }
    assert done.stat().st_mtime_ns == stamp  # the finished run was not run again
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().out


def test_threads_are_divided_between_jobs(recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    seen = {}
    monkeypatch.setattr(sweep, "run_local", lambda s, pending: seen.update(jobs=s.jobs, threads=s.threads_per_run,
                                                                          argv=pending[0].argv))
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", str(tmp_path / "s"), "--jobs", "3"]) == 0
    assert seen["jobs"] == 3 and seen["threads"] == 2 and "--torch_threads=2" in seen["argv"]


def test_submitit_launcher_runs_the_same_command(recipe, tmp_path):
    out = tmp_path / "slurm"
    code = sweep.main([recipe, "--seeds", "1", "--output_dir", str(out), "--launcher", "slurm",
                       "--slurm", "cluster=debug", "--stages.x2.max_steps=2"])
    assert code == 0
    run = _manifest(out)["runs"][0]
    assert run["status"] == "done" and run["job_id"]
    results = json.loads((out / "seed0" / "results.json").read_text())
    assert results["stages"]["x2"]["steps"] == 2  # extra overrides reach every run
    assert (out / "slurm_logs").is_dir()


def test_resume_refuses_runs_made_with_another_configuration(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [recipe, "--seeds", "1", "--output_dir", str(out), "--jobs", "1", "--stages.x2.max_steps=2"]
    assert sweep.main(args) == 0
    assert sweep.main([*args[:-1], "--stages.x2.max_steps=3"]) == 2
    assert "already finished with a different configuration (stages.x2.max_steps)" in capsys.readouterr().err
    assert sweep.main([*args, "--jobs", "1"]) == 0  # the same configuration resumes (threads may differ)


def test_extending_a_sweep_keeps_earlier_runs(recipe, tmp_path):
    out = tmp_path / "sweep"
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", str(out), "--jobs", "1"]) == 0
    assert sweep.main([recipe, "--seeds", "1", "--seed_start", "1", "--output_dir", str(out), "--jobs", "1"]) == 0
    assert sorted(r["name"] for r in _manifest(out)["runs"]) == ["seed0", "seed1"]


def test_argument_errors_are_clear(recipe, tmp_path, capsys):
    out = str(tmp_path / "never")
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", out, "--set", "task.reliable_tag=a/b,a_b"]) == 2
    assert "share the folder" in capsys.readouterr().err
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", out, "--set", "model.config_overrides={a: 1, b: 2}"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", out, "--launcher", "slurm", "--slurm", "partition"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert sweep.parse_slurm("time=1:00:00") == ("time", "1:00:00")
    assert sweep.parse_slurm("exclude=node1,node2") == ("exclude", "node1,node2")
    assert sweep.parse_slurm("timeout_min=60") == ("timeout_min", 60)
