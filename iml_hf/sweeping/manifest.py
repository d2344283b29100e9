"""The sweep's manifest (``sweep.json``): every run and what happened to it, what a rerun keeps of an
earlier manifest, and the check that lets a finished run be skipped."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.resolved import configuration, configuration_defaults, same_configuration
from iml_hf.utils.io import write_json_atomic

_MANIFEST_LOCK = threading.Lock()


@dataclass
class SweepRun:
    """One run of the sweep: its seed, the ``--set`` values it takes, and what happened to it."""

    name: str
    seed: int
    overrides: dict[str, Any]
    output_dir: str
    argv: list[str]
    status: str = "pending"  # pending | running | done | skipped | failed | interrupted
    returncode: int | None = None
    wall_time_s: float | None = None
    log: str = ""
    job_id: str | None = None
    branch: int | None = None  # a branch of a branched recipe (its output_dir is the seed's folder)

    @property
    def results_dir(self) -> Path:
        """The folder of this run's results.json (``<output_dir>/branch<b>`` for a branch)."""
        return Path(self.output_dir) / f"branch{self.branch}" if self.branch is not None else Path(self.output_dir)

    @property
    def finished(self) -> bool:
        return (self.results_dir / "results.json").exists()


@dataclass
class Sweep:
    """The manifest: the recipe, the grid and every run."""

    recipe: str
    output_dir: str
    seeds: list[int]
    sets: dict[str, list[Any]]
    extra: list[str]
    launcher: str
    jobs: int
    threads_per_run: int
    runs: list[SweepRun] = field(default_factory=list)

    def save(self) -> None:
        """Rewrite the manifest (atomically; runs finishing in parallel threads take turns)."""
        with _MANIFEST_LOCK:
            write_json_atomic(Path(self.output_dir) / "sweep.json", asdict(self))


def record_end(sweep: Sweep, run: SweepRun, interrupted: bool) -> None:
    """Record how a run ended: done (exit 0 and results.json), interrupted (stopped by the sweep's
    interruption, unfinished) or failed."""
    if run.returncode == 0 and run.finished:
        run.status = "done"
    elif interrupted and not run.finished:
        run.status = "interrupted"
    elif interrupted:  # it finished just as the sweep was stopped
        run.status = "done"
    else:
        run.status = "failed"
    sweep.save()


def previous_runs(manifest: Path) -> dict[str, dict[str, Any]]:
    """Run name -> its record in an existing manifest (empty if there is none). A manifest that
    cannot be read is an error, never replaced: it may be the only record of earlier runs."""
    if not manifest.exists():
        return {}
    how = (
        f"move it aside (e.g. mv {manifest} {manifest}.bad) and rerun the same command: finished runs are still skipped"
    )
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        raise RecipeError(f"{manifest} is not a readable sweep manifest ({error}); {how}") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in runs):
        raise RecipeError(f"{manifest} is not a sweep manifest (no 'runs' list of named runs); {how}")
    return {r["name"]: r for r in runs}


def earlier_runs(manifest: Path, previous: dict[str, dict[str, Any]], planned: list[SweepRun]) -> list[SweepRun]:
    """The earlier manifest's runs that are not planned now: they stay in the manifest."""
    names = {run.name for run in planned}
    known = {f.name for f in fields(SweepRun)}
    try:
        return [
            SweepRun(**{k: v for k, v in record.items() if k in known})
            for name, record in previous.items()
            if name not in names
        ]
    except TypeError as error:
        raise RecipeError(
            f"{manifest} has a run record that is not a sweep run ({error}); move it aside "
            f"(e.g. mv {manifest} {manifest}.bad) and rerun the same command"
        ) from None


def mark_skipped(runs: list[SweepRun], previous: dict[str, dict[str, Any]]) -> None:
    """A finished run is skipped, keeping what the earlier manifest knew of it (exit code, wall time, job)."""
    for run in runs:
        if run.finished:
            old = previous.get(run.name, {})
            run.returncode, run.wall_time_s, run.job_id = (
                old.get("returncode"),
                old.get("wall_time_s"),
                old.get("job_id"),
            )
            run.status = "skipped"


def check_resumable(run: SweepRun) -> None:
    """A finished run is only skipped if it was made with the configuration planned now (a key that
    the finished run predates counts as equal at its default, ``same_configuration``)."""
    path = run.results_dir / "results.json"
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"{path} is not readable JSON ({error}); move that run's folder aside to run it again"
        ) from None
    if not isinstance(done, dict) or not isinstance(done.get("recipe"), dict):
        raise RecipeError(f"{path} records no recipe; move that run's folder aside to run it again")
    planned = parse_recipe(run.argv, prog="iml_hf.sweep")
    if run.branch is not None:  # a branch's results.json records the branch's own recipe
        from iml_hf.training.branching import branch_recipe

        planned = branch_recipe(planned, run.branch)
    new_resolved = planned.resolved
    old, new = configuration(done["recipe"]), configuration(new_resolved)
    differing = same_configuration(old, new)
    if differing:  # only then work out the defaults
        differing = same_configuration(old, new, configuration_defaults(new_resolved))
    if differing:
        raise RecipeError(
            f"{run.name} already finished with a different configuration ({', '.join(differing[:5])}); "
            "use another --output_dir or delete that run's folder"
        )
