"""Shared I/O: atomic writes leave no partial file, the metrics log, and no training stack on import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iml_hf.utils.io import MetricsLog, read_jsonl, remove_empty_dirs, write_atomic, write_json_atomic


def test_write_json_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_metrics_log_appends_rows_and_only_when_enabled(tmp_path):
    log = MetricsLog(tmp_path / "sub" / "metrics.jsonl")
    log.write([{"name": "eval/x/em", "value": 0.5}])
    log.write([{"name": "eval/x/em", "value": 0.75}])
    MetricsLog(tmp_path / "other.jsonl", enabled=False).write([{"value": 1}])
    assert [r["value"] for r in read_jsonl(tmp_path / "sub" / "metrics.jsonl")] == [0.5, 0.75]
    assert not (tmp_path / "other.jsonl").exists() and read_jsonl(tmp_path / "other.jsonl") == []


def test_remove_empty_dirs_keeps_folders_with_files(tmp_path):
    (tmp_path / "ckpt" / "empty").mkdir(parents=True)
    (tmp_path / "ckpt" / "full").mkdir()
    (tmp_path / "ckpt" / "full" / "x").write_text("1")
    remove_empty_dirs(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["full"]
    (tmp_path / "ckpt" / "full" / "x").unlink()
    (tmp_path / "ckpt" / "full").rmdir()
    remove_empty_dirs(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("module", ["iml_hf.report", "iml_hf.sweep", "iml_hf.analysis.layer_report"])
def test_report_sweep_and_analyze_do_not_import_the_training_stack(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('iml_hf.training.pipeline', 'iml_hf.training.trainer', 'iml_hf.measure.callbacks') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def _strict(text: str):
    """json.loads that refuses NaN and infinities, as strict parsers (JavaScript, jq) do."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_written_by_the_toolkit_is_strict_nan_and_inf_become_null(tmp_path):
    import numpy as np

    data = {
        "mean": float("nan"),
        "high": float("inf"),
        "n": np.int64(3),
        "x": np.float32(0.5),
        "rows": [{"t": float("-inf")}, (1.0, float("nan"))],
        "ok": np.bool_(True),
    }
    write_json_atomic(tmp_path / "summary.json", data)
    assert _strict((tmp_path / "summary.json").read_text()) == {
        "high": None,
        "mean": None,
        "n": 3,
        "ok": True,
        "rows": [{"t": None}, [1.0, None]],
        "x": 0.5,
    }
    log = MetricsLog(tmp_path / "metrics.jsonl", seed=1)
    log.write([{"name": "eval/x/em", "value": float("nan")}, {"name": "eval/y/em", "value": 0.25}])
    rows = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"name": "eval/x/em", "seed": 1, "value": None}, {"name": "eval/y/em", "seed": 1, "value": 0.25}]
