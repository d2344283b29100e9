"""Trackers over a multi-stage run: wandb (offline) and TensorBoard read back against metrics.jsonl."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_RECIPE

from iml_hf import train
from iml_hf.config import build_recipe, parse_recipe
from iml_hf.config.run_names import run_name
from iml_hf.sweeping.grid import plan
from iml_hf.training.trackers import run_group, run_tags, tracker_names

#: A tiny run with a second measurement family next to ``eval`` (embedding cosines, no plots).
MEASURED = ["--embedding_geometry.enabled=true", "--embedding_geometry.plots=false"]


@pytest.fixture
def offline_trackers(tmp_path, monkeypatch):
    """wandb offline with every folder in the test's directory (no network, no login), no tracker
    settings from the environment; wandb's service is stopped afterwards."""
    for key in ("WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_NAME", "WANDB_DIR", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for key, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(key, str(tmp_path / "wandb_home" / folder))
    yield
    import wandb

    wandb.teardown()


def read_wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline run's ``.wandb`` file: a LevelDB-style log (header
    ``:W&B``, magic 0xBEE1, then 32 KiB blocks of CRC32-checked FULL/FIRST/MIDDLE/LAST chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a wandb transaction log"
    block, pos, records, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        if kind == 0:  # zero padding up to the end of the block
            pos += block - pos % block
            continue
        assert zlib.crc32(bytes([kind]) + chunk) == checksum, f"corrupt chunk at byte {pos} of {path}"
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def wandb_history(records: list[Any]) -> list[dict[str, Any]]:
    """Every ``wandb.log`` row of the run, in order, as {key: value}."""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]


def metrics_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tracker_names_keep_measurement_names():
    logs = {"eval/x1t/em": 0.5, "embedding/x1t/embed_cos": 0.1, "loss": 2.0, "eval_loss": 3.0}
    assert tracker_names(logs) == {
        "eval/x1t/em": 0.5,
        "embedding/x1t/embed_cos": 0.1,
        "train/loss": 2.0,
        "eval/loss": 3.0,
    }


def test_run_name_group_and_tags_from_recipe_and_seed(tiny_recipe):
    recipe = parse_recipe([str(tiny_recipe)])
    assert (run_name(recipe), run_group(recipe), run_tags(recipe)) == (
        "tiny-seed0",
        "tiny",
        ["modmul", "gpt2", "tiny", "seed0"],
    )
    recipe = parse_recipe([str(tiny_recipe), "--seed=3", "--tracker_group=mysweep", "--model.architecture=llama"])
    assert (run_name(recipe), run_group(recipe), run_tags(recipe)) == (
        "tiny-seed3",
        "mysweep",
        ["modmul", "llama", "tiny", "seed3"],
    )
    assert run_name(parse_recipe([str(tiny_recipe), "--training.run_name=mine"])) == "mine"


def test_run_name_without_a_file_and_checkpoint_tags(tmp_path):
    nested = {
        **TINY_RECIPE,
        "output_dir": str(tmp_path / "nofile"),
        "model": {"model_name_or_path": "EleutherAI/pythia-70m"},
    }
    recipe = build_recipe(nested)
    assert (run_name(recipe), run_group(recipe)) == ("nofile", "nofile")
    assert run_tags(recipe) == ["modmul", "EleutherAI/pythia-70m", "nofile", "seed0"]
    local = build_recipe({**nested, "model": {"model_name_or_path": str(tmp_path / "ckpts" / "pythia-step1000")}})
    assert run_tags(local)[1] == "pythia-step1000"


def test_sweep_runs_share_the_sweep_name_as_group(tiny_recipe, tmp_path):
    runs = plan(str(tiny_recipe), str(tmp_path / "toy-sweep"), [0, 1], {}, [], 1)
    recipes = [parse_recipe(run.argv) for run in runs]
    assert [run_group(r) for r in recipes] == ["toy-sweep", "toy-sweep"]
    assert [run_name(r) for r in recipes] == ["tiny-seed0", "tiny-seed1"]
    given = plan(str(tiny_recipe), str(tmp_path / "toy-sweep"), [0], {}, ["--tracker_group=mine"], 1)
    assert run_group(parse_recipe(given[0].argv)) == "mine"


def test_wandb_offline_run_holds_every_measurement_of_all_stages(tiny_recipe, tmp_path, monkeypatch, offline_trackers):
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    out = tmp_path / "run"
    train.main([str(tiny_recipe), f"--output_dir={out}", "--training.report_to=wandb", *MEASURED])
    assert wandb.run is None  # finished once the last stage is done

    files = list((tmp_path / "wandb_dir").rglob("*.wandb"))
    assert len(files) == 1, files  # one run for all stages
    records = read_wandb_records(files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") == 1 and "exit" in kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.display_name, run.run_group, list(run.tags)) == (
        "tiny-seed0",
        "tiny",
        ["modmul", "gpt2", "tiny", "seed0"],
    )
    assert run.project == "iml_hf"

    history = wandb_history(records)
    steps = [row["train/global_step"] for row in history]
    assert steps == sorted(steps) and max(steps) == 14  # one axis over stages of 6, 4 and 4 steps
    logged: dict[tuple[str, int], Any] = {}
    for row in history:
        logged.update({(key, row["train/global_step"]): value for key, value in row.items()})
    rows = metrics_rows(out)
    assert {"eval", "embedding"} <= {r["family"] for r in rows}
    for r in rows:  # every measurement (and training loss) under its metrics.jsonl name, value and step over all stages
        assert logged[(r["name"], r["global_step"])] == r["value"], r
    assert {r["global_step"] for r in rows if r["family"] != "train"} == {3, 6, 9, 10, 13, 14}


def test_tensorboard_one_folder_with_every_measurement_and_wandb_beside_the_run(
    tiny_recipe, tmp_path, offline_trackers
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    out = tmp_path / "run"
    train.main(
        [
            str(tiny_recipe),
            f"--output_dir={out}",
            "--training.report_to=[tensorboard, wandb]",
            "--tracker_group=grid",
            *MEASURED,
        ]
    )
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert {e.parent for e in events} == {out / "tensorboard"} and len(events) == 1  # one writer for all stages
    assert len(list((out / "wandb").rglob("*.wandb"))) == 1  # without WANDB_DIR, wandb writes beside the run

    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    text = {
        tag.removesuffix("/text_summary"): tensor_util.make_ndarray(accumulator.Tensors(tag)[0].tensor_proto)[
            0
        ].decode()
        for tag in accumulator.Tags()["tensors"]
    }
    assert (text["run/name"], text["run/group"], text["run/tags"]) == (
        "tiny-seed0",
        "grid",
        "modmul, gpt2, tiny, seed0",
    )
    assert {"args/pretrain", "args/x1", "args/x2"} <= set(text)

    rows = metrics_rows(out)
    scalars = set(accumulator.Tags()["scalars"])
    assert {r["name"] for r in rows} <= scalars
    for name in {r["name"] for r in rows}:
        logged = [(e.step, e.value) for e in accumulator.Scalars(name)]
        expected = [(r["global_step"], r["value"]) for r in rows if r["name"] == name]
        assert [step for step, _ in logged] == [step for step, _ in expected], name  # same steps, monotone
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6, abs=1e-7)
    axis = [(e.step, e.value) for e in accumulator.Scalars("train/total_step")]  # every Trainer log, all stages
    assert all(step == value for step, value in axis) and [s for s, _ in axis] == sorted(s for s, _ in axis)
    assert axis[-1][0] == 14


def _scalar_steps(log_dir: Path) -> dict[str, list[int]]:
    """Every scalar tag's steps as TensorBoard shows the folder (killed runs' purged events hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [e.step for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _wandb_runs(folder: Path) -> list[tuple[str, list[Any]]]:
    """Each offline wandb run folder under ``folder`` (oldest first): its run id and its records
    (a SIGKILLed process leaves a transaction log that wandb had not flushed yet: no records)."""
    runs = sorted(folder.glob("offline-run-*"))
    return [(run.name.rsplit("-", 1)[1], read_wandb_records(next(run.glob("*.wandb")))) for run in runs]


def test_a_killed_and_resumed_run_continues_one_tensorboard_log_and_one_wandb_run(tmp_path, offline_trackers):
    """Killed inside x1 after it logged past its last checkpoint, then rerun: TensorBoard shows one
    series per tag over all stages with no step twice (the killed run's steps after the checkpoint
    are purged) and equal to metrics.jsonl; both wandb run files carry the same run id."""
    import yaml
    from conftest import kill_train_when

    out, work = tmp_path / "run", tmp_path / "run.partial"
    recipe = {
        **TINY_RECIPE,
        "output_dir": str(out),
        "checkpoint_steps": 10,
        "evaluation": {"eval_steps": 5},
        "stages": [TINY_RECIPE["stages"][0], {**TINY_RECIPE["stages"][1], "max_steps": 80}, TINY_RECIPE["stages"][2]],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    argv = [path, "--training.report_to=[tensorboard, wandb]"]

    def checkpoint() -> int:
        done = [
            int(p.name.split("-")[1])
            for p in (work / "checkpoints" / "x1").glob("checkpoint-*")
            if (p / "resume.json").is_file()
        ]
        return max(done, default=0)

    def logged_past_checkpoint() -> bool:
        step = checkpoint()
        return (
            step > 0
            and (work / "metrics.jsonl").exists()
            and any(r.get("stage_index") == 1 and r.get("stage_step", 0) > step for r in metrics_rows(work))
        )

    kill_train_when(argv, logged_past_checkpoint)
    resume = 6 + checkpoint()  # pretrain's 6 steps, then x1's checkpoint: where the rerun continues
    before = _scalar_steps(work / "tensorboard")
    assert max(before["eval/x1t/em"]) > resume  # the killed run logged steps the rerun logs again
    first_id = json.loads((work / "trackers.json").read_text())["wandb_run_id"]

    done = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the run" in done.stdout

    assert [p.parent for p in out.rglob("events.out.tfevents.*")] == [
        out / "tensorboard"
    ] * 2  # one folder, two writers
    after = _scalar_steps(out / "tensorboard")
    rows = metrics_rows(out)
    for name in {r["name"] for r in rows}:  # one series per measurement: metrics.jsonl's steps, none twice
        assert after[name] == [r["global_step"] for r in rows if r["name"] == name], name
        assert after[name] == sorted(set(after[name])), name
    reference = tmp_path / "reference"  # the same recipe, never killed: the same steps in every series
    train.main([str(path), f"--output_dir={reference}", "--training.report_to=tensorboard"])
    assert after == _scalar_steps(reference / "tensorboard")
    em = after["eval/x1t/em"]
    assert min(em) < resume < max(em) and max(after["train/total_step"]) == 6 + 80 + 4  # before and after the resume

    runs = _wandb_runs(out / "wandb")  # the rerun resumed the same wandb run: one id, the history after the resume
    assert [run_id for run_id, _ in runs] == [first_id, first_id]
    resumed = runs[-1][1]
    assert [r.run.run_id for r in resumed if r.WhichOneof("record_type") == "run"] == [first_id]
    steps = [row["train/global_step"] for row in wandb_history(resumed)]
    assert min(steps) > resume and max(steps) == 6 + 80 + 4
    assert json.loads((out / "trackers.json").read_text()) == {"wandb_run_id": first_id}
