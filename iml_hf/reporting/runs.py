"""The runs a report reads: finding and loading run folders, refusing bad ones, grouping by configuration.

A run is its ``results.json`` and ``metrics.jsonl``; a run whose ``results.json`` cannot be read or
lacks what the report needs is a ``BadRun`` (skipped and listed), a ``metrics.jsonl`` whose last line
is cut off loses that line with a note, and two runs of one group with the same seed are refused
(``DuplicateRuns``). The readers below the loading give a run's stage ends, subsets, contrasts and
stage order as the report uses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iml_hf.config.resolved import configuration, configuration_defaults, same_configuration
from iml_hf.tasks import make_task


@dataclass
class RunRecord:
    """One finished run: where it is, its seed and ``--set`` values, its results and metric rows."""

    name: str
    path: Path
    seed: int
    overrides: dict[str, Any]
    results: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def branch(self) -> int | None:
        """The stage-2 branch this run is (``iml_hf.training.branching``), or None for a plain run."""
        return ((self.results.get("recipe") or {}).get("task") or {}).get("branch")


class BadRun(ValueError):
    """A run the report cannot use: ``path`` is the file, the message says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class DuplicateRuns(ValueError):
    """Two runs of one group have the same seed: one is a copy of the other, or the group mixes runs."""


def _number(value: Any) -> bool:
    """A JSON number or null (NaN is written as null), not a boolean."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def results_problem(results: Any) -> str | None:
    """What a results.json lacks for the report (its recipe's seed, its stages with steps and EM
    values, its wall time), or None when it is usable."""
    if not isinstance(results, dict):
        return f"not a JSON object but {type(results).__name__}"
    missing = [key for key in ("recipe", "stages", "wall_time_s") if key not in results]
    if missing:
        return f"missing required key(s) {', '.join(missing)}" + ("" if results else " (the file is {})")
    recipe = results["recipe"]
    if not isinstance(recipe, dict) or not isinstance(recipe.get("seed"), int) or isinstance(recipe.get("seed"), bool):
        return "recipe.seed is missing or not an integer"
    if "subsets" not in results and not isinstance(recipe.get("task"), dict):
        return "neither subsets nor recipe.task is recorded"
    if not _number(results["wall_time_s"]):
        return "wall_time_s is not a number"
    stages = results["stages"]
    if not isinstance(stages, dict) or not stages:
        return "stages is empty or not an object"
    for name, stage in stages.items():
        if (
            not isinstance(stage, dict)
            or not isinstance(stage.get("em"), dict)
            or not isinstance(stage.get("steps"), int)
        ):
            return f"stage {name!r} lacks its em values or steps"
        bad = [s for s, v in stage["em"].items() if not _number(v)]
        if bad:
            return f"stage {name!r}: em[{bad[0]!r}] is not a number"
    return None


def _read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl; a last line cut off by a killed writer is left out (with a
    note), any other unreadable line makes the run bad."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadRun(path, f"unreadable ({error})") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    rows = []
    for index, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except ValueError as error:
            if index == len(numbered) - 1:
                notes.append(
                    f"{path}: skipped its last line {number}, cut off ({error}): a killed writer's partial line"
                )
                break
            raise BadRun(path, f"line {number} is not a JSON object ({error})") from None
        if not isinstance(row, dict):
            raise BadRun(path, f"line {number} is not a JSON object but {type(row).__name__}")
        rows.append(row)
    return rows


def _read_run(name: str, path: Path, overrides: dict[str, Any], notes: list[str]) -> RunRecord:
    """One run folder; BadRun (naming the file and why) if it cannot be used."""
    file = path / "results.json"
    try:
        results = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise BadRun(file, f"unreadable ({error})") from None
    except ValueError as error:
        raise BadRun(file, f"not valid JSON ({error})") from None
    problem = results_problem(results)
    if problem:
        raise BadRun(file, problem)
    rows = _read_metrics(path / "metrics.jsonl", notes)
    return RunRecord(name, path, int(results["recipe"]["seed"]), overrides, results, rows)


@dataclass
class Loaded:
    """What ``load_runs`` found: the usable runs, the manifest's runs without results, the
    skipped bad runs ({"path", "reason"}) and notes (lines left out of a metrics.jsonl)."""

    runs: list[RunRecord]
    missing: list[str]
    bad: list[dict[str, str]]
    notes: list[str]


def load_runs(root: Path) -> Loaded:
    """The finished runs under ``root`` and a line for every run of the manifest that is missing;
    bad runs are skipped and listed. An unreadable manifest is an error naming it."""
    manifest = root / "sweep.json"
    runs: list[RunRecord] = []
    missing: list[str] = []
    bad: list[dict[str, str]] = []
    notes: list[str] = []

    def read(name: str, path: Path, overrides: dict[str, Any]) -> None:
        try:
            runs.append(_read_run(name, path, overrides, notes))
        except BadRun as error:
            bad.append({"path": str(error.path), "reason": error.reason})

    if manifest.exists():
        try:
            entries = json.loads(manifest.read_text())["runs"]
            entries = [(e["name"], dict(e.get("overrides") or {}), e) for e in entries]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{manifest} is not a readable sweep manifest ({type(error).__name__}: {error}); "
                f"move it aside to report the runs found under {root}"
            ) from None
        for name, overrides, entry in entries:
            path = root / name
            if (path / "results.json").exists():
                read(name, path, overrides)
            else:
                missing.append(f"{name}: no results.json (status {entry.get('status')}, log {entry.get('log')})")
    else:
        for results in sorted(root.rglob("results.json")):
            if results.parent.name == "trunk" and any(results.parent.parent.glob("branch*/results.json")):
                continue  # a branched run's trunk: its branches carry its stages
            read(str(results.parent.relative_to(root)), results.parent, {})
    _infer_overrides(runs)
    return Loaded(runs, missing, bad, notes)


#: Keys that tell a run's branch, not its configuration: branches of one recipe are one group.
BRANCH_KEYS = {"task.branch"}


def _infer_overrides(runs: list[RunRecord]) -> None:
    """A run's overrides are its ``--set`` values (from the manifest) plus the recipe keys (other than
    seed and paths) whose values differ between the runs, so runs of different configurations are
    never pooled, manifest or not. A key that runs recorded before it existed lack counts as equal
    when the others hold its default (``same_configuration``)."""
    if not runs:
        return
    flat = [configuration(r.results["recipe"], with_seed=False) for r in runs]
    keys = set().union(*flat)
    defaults: dict[str, Any] = {}
    if any(len(f) != len(keys) for f in flat):  # some run lacks a key: only then work out the defaults
        try:
            defaults = configuration_defaults(runs[-1].results["recipe"])
        except Exception:  # noqa: BLE001 - without defaults a missing key simply differs
            defaults = {}
    # same_configuration compares values with the defaults filled in, an equality: comparing every
    # run with the first finds every key on which any two runs differ
    differing = sorted({k for f in flat[1:] for k in same_configuration(flat[0], f, defaults)} - BRANCH_KEYS)
    for run, values in zip(runs, flat):
        for key in differing:
            if key not in run.overrides:
                run.overrides[key] = values[key] if key in values else defaults.get(key, "<absent>")


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs with the same ``--set`` values (and configuration), in first-seen order; the key is a
    readable label. Two runs of one group with the same seed are refused (DuplicateRuns naming both):
    a copied or twice-collected run must never count as two seeds."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        label = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "all runs"
        groups.setdefault(label, []).append(run)
    for label, members in groups.items():
        seen: dict[tuple[int, int | None], RunRecord] = {}
        for run in members:
            key = (run.seed, run.branch)
            if key in seen:
                what = f"seed {run.seed}" + ("" if run.branch is None else f", branch {run.branch},")
                raise DuplicateRuns(
                    f"{seen[key].path} and {run.path} are both {what} of the group '{label}' (the same "
                    "configuration): one is a copy or a rerun of the other; move one of them out of the folder so "
                    "that no run counts twice"
                )
            seen[key] = run
    return groups


def row_family(row: dict[str, Any]) -> str:
    """The measurement family of a metrics.jsonl row (rows written before ``family`` existed: EM
    rows had bare metric names, the others ``<family>/<metric>``)."""
    if "family" in row:
        return row["family"]
    return (
        row["metric"].split("/", 1)[0] if "/" in row["metric"] else ("eval" if row["metric"] == "em" else "embedding")
    )


def stage_ends(run: RunRecord) -> list[tuple[int, str]]:
    """``(step, stage)`` at the end of each stage of results.json, the steps counted over all stages."""
    ends, total = [], 0
    for stage, entry in run.results["stages"].items():
        total += entry["steps"]
        ends.append((total, stage))
    return ends


def subset_order(results: dict[str, Any]) -> list[str]:
    """The task's subsets in display order (results written before ``subsets`` existed: the task's)."""
    return results.get("subsets") or list(make_task(results["recipe"]["task"]).subsets)


def contrast_sets(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The run's task-declared contrasts (results written before contrasts existed: the task's)."""
    if "contrast_sets" in results:
        return {name: (a, b) for name, a, b in results["contrast_sets"]}
    return dict(make_task(results["recipe"]["task"]).contrasts)


def stage_order(runs: list[RunRecord]) -> list[str]:
    """The stages in training order (results.json sorts its keys; the rows carry ``stage_index``)."""
    index = {r["stage"]: r["stage_index"] for run in runs for r in run.rows if "stage" in r and "stage_index" in r}
    stages = list(runs[0].results["stages"])
    return sorted(stages, key=lambda s: (index.get(s, len(stages)), stages.index(s)))
