"""samples.jsonl: the final evaluation's examples, one row each, agreeing with results.json's EM."""

from __future__ import annotations

import json
from collections import defaultdict

from conftest import TINY_RECIPE, run_recipe


def test_a_run_writes_the_final_evaluations_examples(monkeypatch, tmp_path):
    stages = [TINY_RECIPE["stages"][0], {**TINY_RECIPE["stages"][1], "max_steps": 1, "learning_rate": 1.0e-5}]
    results, _ = run_recipe(monkeypatch, tmp_path, stages=stages)  # x1 keeps pretrain's answers: some right
    out = tmp_path / "run"
    lines = (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    samples = [json.loads(line) for line in lines]
    by_set: dict[str, list[dict]] = defaultdict(list)
    for row in samples:
        by_set[row["subset"]].append(row)

    last = stages[-1]["name"]
    assert {row["stage"] for row in samples} == {last}  # the final evaluation only
    assert list(by_set) == list(results["final_em"])  # every evaluated set, in results' order
    for name, rows in by_set.items():
        assert len(rows) == results["stages"][last]["n"][name]
        assert sum(row["match"] for row in rows) / len(rows) == results["final_em"][name], name
        assert [row["index"] for row in rows] == list(range(len(rows)))
    assert 0 < sum(row["match"] for row in samples) < len(samples)  # both kinds occur, so the check bites
    for row in samples:  # single-token answers: the decoded greedy token is the answer exactly when it matches
        assert set(row) == {"stage", "subset", "index", "prompt", "answer", "prediction", "match"}
        assert row["prompt"] and row["answer"] and row["prediction"]
        assert row["match"] == (row["prediction"] == row["answer"]), row
    assert not list(tmp_path.rglob(".samples.tmp.jsonl"))  # written atomically, nothing left beside it
