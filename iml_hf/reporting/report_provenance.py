"""The provenance a report states: its own (``iml_hf.utils.provenance``) and what the runs'
results.json recorded, as summary.json holds them and as lines of Markdown."""

from __future__ import annotations

import json
from typing import Any

from iml_hf.reporting.runs import RunRecord


def report_provenance(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The report's own provenance (``iml_hf.utils.provenance``: versions, commit, date, command), or None
    where that module is missing."""
    try:
        from iml_hf.utils.provenance import provenance
    except ImportError:
        return None
    return provenance(argv)


def _pick(record: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` the record gives a value (records written by older versions name them differently)."""
    return next((record[k] for k in keys if record.get(k) not in (None, "", {})), None)


def provenance_line(record: dict[str, Any] | None) -> str:
    """A provenance record in one line: commit, date, the main package versions, the command."""
    if not record:
        return "not recorded"
    parts = []
    git = record.get("git")
    if not isinstance(git, dict):
        git = {}
    commit = git.get("commit") or _pick(record, "git_commit", "commit")
    if commit:
        parts.append(f"commit {str(commit)[:12]}" + (" with uncommitted changes" if git.get("dirty") else ""))
    else:
        parts.append("no git commit (not run from a git checkout)")
    date = _pick(record, "date", "time", "created")
    if date:
        parts.append(str(date))
    versions = _pick(record, "versions", "packages") or {}
    if isinstance(versions, dict) and versions:
        parts.append(", ".join(f"{k} {v}" for k, v in list(versions.items())[:6]))
    command = _pick(record, "command", "argv")
    if command:
        parts.append(f"`{command if isinstance(command, str) else ' '.join(map(str, command))}`")
    return "; ".join(parts)


def runs_provenance(runs: list[RunRecord]) -> dict[str, Any]:
    """What the runs' results.json recorded of their provenance: how many carry it and each
    distinct commit and package versions with its number of runs (runs made before results.json
    had provenance carry none)."""
    recorded = [r.results["provenance"] for r in runs if isinstance(r.results.get("provenance"), dict)]
    distinct: dict[str, dict[str, Any]] = {}
    for record in recorded:
        key = json.dumps(
            {k: record.get(k) for k in sorted(record) if k not in ("date", "command", "argv", "time")},
            sort_keys=True,
            default=str,
        )
        entry = distinct.setdefault(key, {"runs": 0, "example": record})
        entry["runs"] += 1
    return {
        "runs": len(runs),
        "recorded": len(recorded),
        "distinct": [{"runs": e["runs"], **e["example"]} for e in distinct.values()],
    }


def provenance_markdown(own: dict[str, Any] | None, runs: dict[str, Any]) -> list[str]:
    """The report's provenance and the runs' recorded provenance, a line each."""
    lines = [f"Report made with: {provenance_line(own)}."]
    if not runs["recorded"]:
        lines.append(
            f"Runs' provenance: not recorded by any of the {runs['runs']} runs (made before results.json carried it)."
        )
    else:
        missing = runs["runs"] - runs["recorded"]
        lines.append(
            f"Runs' provenance ({runs['recorded']} of {runs['runs']} runs recorded it"
            + (f"; {missing} older runs did not" if missing else "")
            + "):"
        )
        lines += [f"- {entry['runs']} run(s): {provenance_line(entry)}" for entry in runs["distinct"]]
    return lines + [""]
