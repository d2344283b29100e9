"""Sweeps: the grid, resuming, failure isolation, thread division and the submitit launcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import TINY_RECIPE

from iml_hf import sweep
from iml_hf.config import RecipeError
from iml_hf.config.resolved import configuration
from iml_hf.sweeping.grid import parse_set, plan
from iml_hf.sweeping.manifest import Sweep, SweepRun
from iml_hf.sweeping.progress import Progress
from iml_hf.sweeping.slurm import parse_slurm, run_slurm


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    small = {**TINY_RECIPE, "evaluation": {"eval_steps": 0}}
    path.write_text(yaml.safe_dump(small, sort_keys=False))
    return str(path)


def _manifest(out):
    return json.loads((out / "sweep.json").read_text())


def test_plan_is_the_grid_times_seeds(recipe, tmp_path):
    runs = plan(recipe, str(tmp_path / "s"), [3, 4], {"task.modulus": [8, 12], "stages.x2.max_steps": [2]}, [], 1)
    assert [r.name for r in runs] == [
        "task.modulus=8,stages.x2.max_steps=2/seed3",
        "task.modulus=8,stages.x2.max_steps=2/seed4",
        "task.modulus=12,stages.x2.max_steps=2/seed3",
        "task.modulus=12,stages.x2.max_steps=2/seed4",
    ]
    assert runs[2].overrides == {"task.modulus": 12, "stages.x2.max_steps": 2}
    assert "--task.modulus=12" in runs[2].argv and "--seed=3" in runs[2].argv and "--torch_threads=1" in runs[2].argv
    assert parse_set("training.learning_rate=1.0e-3,3.0e-3") == ("training.learning_rate", [1e-3, 3e-3])
    with pytest.raises(RecipeError, match="did you mean"):
        plan(recipe, str(tmp_path / "s"), [0], {"task.modulos": [8]}, [], 1)


def test_bad_set_key_exits_2_and_writes_nothing(recipe, tmp_path, capsys):
    out = tmp_path / "never"
    code = sweep.main([recipe, "--seeds", "2", "--output_dir", str(out), "--set", "model.hiden_size=8,16"])
    assert code == 2 and not out.exists()
    assert "did you mean '--model.hidden_size'" in capsys.readouterr().err


def test_a_local_sweep_checks_every_runs_training_arguments_before_anything_runs(recipe, tmp_path, capsys):
    out = tmp_path / "never"  # reduce_lr_on_plateau needs an evaluation strategy: transformers refuses it
    args = [
        recipe,
        "--seeds",
        "1",
        "--output_dir",
        str(out),
        "--set",
        "training.lr_scheduler_type=linear,reduce_lr_on_plateau",
    ]
    code = sweep.main(args)
    assert code == 2 and not out.exists()
    assert "invalid training arguments" in capsys.readouterr().err


def test_sweep_resumes_and_isolates_a_failing_run(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        recipe,
        "--seeds",
        "2",
        "--output_dir",
        str(out),
        "--jobs",
        "2",
        "--threads",
        "1",
        "--set",
        "model.model_name_or_path=null,/nonexistent/checkpoint",
    ]
    assert sweep.main(args) == 1  # one combination fails, the other finishes
    manifest = _manifest(out)
    status = {r["name"]: r["status"] for r in manifest["runs"]}
    assert status == {
        "model.model_name_or_path=null/seed0": "done",
        "model.model_name_or_path=null/seed1": "done",
        "model.model_name_or_path=_nonexistent_checkpoint/seed0": "failed",
        "model.model_name_or_path=_nonexistent_checkpoint/seed1": "failed",
    }
    failed = next(r for r in manifest["runs"] if r["status"] == "failed")
    assert failed["log"] == f"{out / failed['name']}.log"  # beside the run's folder, which the sweep leaves to train
    assert failed["returncode"] != 0 and "nonexistent" in (out / f"{failed['name']}.log").read_text()
    out_text = capsys.readouterr().out
    assert "failed: model.model_name_or_path=_nonexistent_checkpoint/seed0" in out_text
    # a status line after each run starts and ends, with counts; plain lines (no carriage return)
    assert "] model.model_name_or_path=null/seed0 done in " in out_text and "\r" not in out_text
    assert out_text.count(" started") == 4 and "[4/4 done" not in out_text
    assert manifest["threads_per_run"] == 1 and manifest["jobs"] == 2

    done = out / "model.model_name_or_path=null/seed0" / "results.json"
    stamp = done.stat().st_mtime_ns
    shutil.rmtree(out / "model.model_name_or_path=null/seed1")  # a run that never finished has no folder
    ok_only = [
        recipe,
        "--seeds",
        "2",
        "--output_dir",
        str(out),
        "--jobs",
        "1",
        "--set",
        "model.model_name_or_path=null",
    ]
    assert sweep.main(ok_only) == 0
    status = {r["name"]: r["status"] for r in _manifest(out)["runs"]}
    assert status == {  # the other combination's runs stay in the manifest, as they were
        "model.model_name_or_path=null/seed0": "skipped",
        "model.model_name_or_path=null/seed1": "done",
        "model.model_name_or_path=_nonexistent_checkpoint/seed0": "failed",
        "model.model_name_or_path=_nonexistent_checkpoint/seed1": "failed",
    }
    assert done.stat().st_mtime_ns == stamp  # the finished run was not run again
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().out


def test_threads_are_divided_between_jobs(recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    seen = {}
    monkeypatch.setattr(
        sweep, "run_local", lambda s, pending: seen.update(jobs=s.jobs, threads=s.threads_per_run, argv=pending[0].argv)
    )
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", str(tmp_path / "s"), "--jobs", "3"]) == 0
    assert seen["jobs"] == 3 and seen["threads"] == 2 and "--torch_threads=2" in seen["argv"]


def test_submitit_launcher_runs_the_same_command(recipe, tmp_path):
    out = tmp_path / "slurm"
    code = sweep.main(
        [
            recipe,
            "--seeds",
            "1",
            "--output_dir",
            str(out),
            "--launcher",
            "slurm",
            "--slurm",
            "cluster=debug",
            "--stages.x2.max_steps=2",
        ]
    )
    assert code == 0
    run = _manifest(out)["runs"][0]
    assert run["status"] == "done" and run["job_id"]
    results = json.loads((out / "seed0" / "results.json").read_text())
    assert results["stages"]["x2"]["steps"] == 2  # extra overrides reach every run
    assert (out / "slurm_logs").is_dir()


def test_submitit_submits_a_seeds_later_branches_after_its_trunk(recipe, tmp_path):
    """Branch 0 trains the trunk; branch 1 is submitted only once the trunk has finished (all at
    once, it would race branch 0 for the trunk's folder)."""
    import submitit

    out = tmp_path / "slurm"
    debug = submitit.AutoExecutor(folder=out / "slurm_logs", cluster="debug")
    trunk_done_at_submit = []

    class Recording:
        def submit(self, command):
            trunk_done_at_submit.append((command.command[-1], (out / "seed0" / "trunk" / "results.json").exists()))
            return debug.submit(command)

    argv = [recipe, "--seeds", "1", "--output_dir", str(out), "--branches=2", "--stages.x2.max_steps=2"]
    runs = plan(recipe, str(out), [0], {}, argv[5:], 1)
    manifest = Sweep(recipe, str(out), [0], {}, argv[5:], "slurm", 1, 1, runs)
    run_slurm(manifest, runs, executor=Recording())
    assert trunk_done_at_submit == [("--only_branch=0", False), ("--only_branch=1", True)]
    assert [r.status for r in runs] == ["done", "done"]


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
    assert (
        sweep.main([recipe, "--seeds", "1", "--output_dir", out, "--set", "model.config_overrides={a: 1, b: 2}"]) == 2
    )
    assert "not valid YAML" in capsys.readouterr().err
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", out, "--launcher", "slurm", "--slurm", "partition"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert parse_slurm("time=1:00:00") == ("time", "1:00:00")
    assert parse_slurm("exclude=node1,node2") == ("exclude", "node1,node2")
    assert parse_slurm("timeout_min=60") == ("timeout_min", 60)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jobs", "0"], "--jobs 0: runs at once must be >= 1"),
        (["--seeds", "0"], "--seeds 0: the number of seeds must be >= 1"),
        (["--threads", "0"], "--threads 0"),
        (["--seed_start", "-1"], "--seed_start -1"),
        (["--set", "seed=1,2"], "--seed is set by the sweep"),
        (["--torch_threads=2"], "--torch_threads is set by the sweep for every run; use the sweep's --threads"),
        (["--set", "task.modulus=8", "--set", "task.modulus=12"], "gives task.modulus twice"),
        (["--set", "task.modulus=8,12", "--task.modulus=16"], "task.modulus is given both by --set"),
        (["--slurm", "partition=gpu"], "--slurm partition=gpu applies to --launcher slurm"),
        (["--launcher", "slurm", "--jobs", "2"], "--jobs applies to --launcher local"),
    ],
)
def test_every_sweep_argument_is_validated(recipe, tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    argv = [recipe, "--seeds", "1", "--output_dir", str(out), *flags]
    if "--seeds" in flags:
        argv[1:3] = []
    assert sweep.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text", ['{"runs": [', "", '{"runs": 3}', "[1, 2]"])
def test_a_corrupt_manifest_is_refused_and_kept(recipe, tmp_path, capsys, text):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(text)
    assert sweep.main([recipe, "--seeds", "1", "--output_dir", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert str(out / "sweep.json") in err and "move it aside" in err and "rerun the same command" in err
    assert (out / "sweep.json").read_text() == text  # never overwritten
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]  # nothing ran


def _measured(results):
    """results.json without wall times, where the run lay and how it was invoked (provenance: the
    command and date): the values a rerun must reproduce."""
    if isinstance(results, dict):
        return {
            k: (configuration(v) if k == "recipe" else _measured(v))
            for k, v in results.items()
            if "wall_time" not in k and k not in ("measurement_seconds", "provenance")
        }
    if isinstance(results, list):
        return [_measured(v) for v in results]
    return results


def _sweep_command(recipe, out):
    return [
        sys.executable,
        "-m",
        "iml_hf.sweep",
        recipe,
        "--seeds",
        "2",
        "--output_dir",
        str(out),
        "--jobs",
        "1",
        "--threads",
        "1",
        "--stages.pretrain.max_steps=60",
    ]  # a few seconds of training to interrupt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted two-seed sweep of the tiny recipe: the results an interrupted one must reach."""
    root = tmp_path_factory.mktemp("reference")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "evaluation": {"eval_steps": 0}}, sort_keys=False))
    out = root / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_sweep_command(str(path), out), check=True, env=env, capture_output=True, timeout=300)
    return {s: _measured(json.loads((out / f"seed{s}" / "results.json").read_text())) for s in (0, 1)}


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_sweep_resumes_to_the_same_results(recipe, tmp_path, uninterrupted, how):
    """Stop the sweep while its second run trains (Ctrl-C to the sweep alone, or SIGKILL to the sweep
    and its runs, as a killed job or machine does); rerunning the same command finishes the sweep with
    the results an uninterrupted one has, without running the finished run again."""
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep_process = subprocess.Popen(
        _sweep_command(recipe, out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    second_log = out / "seed1.log"
    deadline = time.monotonic() + 240
    while not (second_log.exists() and " loss " in second_log.read_text()) and sweep_process.poll() is None:
        assert time.monotonic() < deadline, "the second run did not start"
        time.sleep(0.2)
    assert sweep_process.poll() is None, sweep_process.communicate()
    first = out / "seed0" / "results.json"
    stamp = first.stat().st_mtime_ns
    if how == "SIGINT":
        sweep_process.send_signal(signal.SIGINT)
        _, err = sweep_process.communicate(timeout=60)
        assert sweep_process.returncode == 130
        assert "Traceback" not in err
        assert "sweep interrupted: 1 run(s) stopped" in err and "rerun the same command" in err
        assert "iml_hf.sweep" in err.splitlines()[-1]
        status = {r["name"]: r["status"] for r in _manifest(out)["runs"]}
        assert status == {"seed0": "done", "seed1": "interrupted"}
    else:
        os.killpg(sweep_process.pid, signal.SIGKILL)
        sweep_process.communicate(timeout=60)
        assert {r["name"]: r["status"] for r in _manifest(out)["runs"]} == {"seed0": "done", "seed1": "running"}
    assert not (out / "seed1" / "results.json").exists()

    rerun = subprocess.run(_sweep_command(recipe, out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 done, 1 skipped, 0 failed" in rerun.stdout
    assert {r["name"]: r["status"] for r in _manifest(out)["runs"]} == {"seed0": "skipped", "seed1": "done"}
    assert first.stat().st_mtime_ns == stamp  # the finished run was not run again
    for seed in (0, 1):
        assert _measured(json.loads((out / f"seed{seed}" / "results.json").read_text())) == uninterrupted[seed]


def test_resume_treats_a_key_newer_than_the_run_at_its_default_as_equal(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [recipe, "--seeds", "1", "--output_dir", str(out), "--jobs", "1", "--stages.x2.max_steps=1"]
    assert sweep.main(args) == 0
    path = out / "seed0" / "results.json"
    results = json.loads(path.read_text())
    del results["recipe"]["evaluation"]["batch_size"]  # as if written before the key existed
    del results["recipe"]["model"]["attention_only"]
    path.write_text(json.dumps(results))
    assert sweep.main(args) == 0 and "1 skipped" in capsys.readouterr().out
    assert sweep.main([*args, "--model.attention_only=true"]) == 2  # not the default: a different run
    assert "different configuration (model.attention_only)" in capsys.readouterr().err
    results["recipe"]["removed_key"] = 1  # a key the code no longer knows: no default, differs
    path.write_text(json.dumps(results))
    assert sweep.main(args) == 2 and "(removed_key)" in capsys.readouterr().err


def test_an_unreadable_finished_run_is_named(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [recipe, "--seeds", "1", "--output_dir", str(out), "--jobs", "1", "--stages.x2.max_steps=1"]
    assert sweep.main(args) == 0
    (out / "seed0" / "results.json").write_text('{"stages": ')
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert str(out / "seed0" / "results.json") in err and "move that run's folder aside" in err


def test_status_line_counts_runs_and_estimates_time_left(tmp_path):
    runs = [SweepRun(f"seed{i}", i, {}, str(tmp_path / f"seed{i}"), []) for i in range(6)]
    for run, status in zip(runs, ["done", "skipped", "running", "running", "pending", "failed"]):
        run.status = status
    runs[0].wall_time_s = 100.0
    manifest = Sweep("r.yaml", str(tmp_path), list(range(6)), {}, [], "local", 2, 1, runs)
    progress = Progress(manifest, workers=2)
    progress.start(runs[2])
    progress.start(runs[3])
    line = progress.line("seed0 done in 100 s")
    # two slots each about 100 s from free, then the pending run: about 200 s
    assert line.startswith("[2/6 done, 2 running, 1 failed, 1 pending] seed0 done in 100 s; about 3 min left")
    runs[0].wall_time_s = None
    assert "time left known once a run has finished" in progress.line("seed2 started")
    for run in runs[2:5]:
        run.status = "done"
        progress.end(run)
    assert progress.line("seed4 done in 90 s").startswith(
        "[5/6 done, 0 running, 1 failed, 0 pending] seed4 done in 90 s (elapsed"
    )


def test_quiet_sweep_prints_only_failures_and_the_final_line(recipe, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        recipe,
        "--seeds",
        "1",
        "--output_dir",
        str(out),
        "--jobs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--set",
        "model.model_name_or_path=/nonexistent/checkpoint",
    ]
    assert sweep.main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[0/1 done, 0 running, 1 failed, 0 pending] ") and "failed in" in lines[0]
    assert lines[1].startswith("sweep finished in ") and "0 done, 0 skipped, 1 failed" in lines[1]
    assert not any("started" in line or line.startswith("sweep: ") for line in lines)
