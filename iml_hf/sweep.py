"""Run a recipe over seeds (times every combination of ``--set`` values), locally or on SLURM.

    python -m iml_hf.sweep recipes/toy.yaml --seeds 10 --output_dir runs/sweep [--jobs 2]
    python -m iml_hf.sweep RECIPE --seeds 5 --set task.modulus=40,80 --set stages.x2.max_steps=2000,3000
    python -m iml_hf.sweep RECIPE --seeds 20 --launcher slurm --slurm.partition gpu --slurm.gpus_per_node 1

Every run is ``python -m iml_hf.train RECIPE --seed S --output_dir DIR/<set values>/seed<S> ...`` in
its own process, with its log beside it and the sweep's name (DIR's) as its ``tracker_group``;
``DIR/sweep.json`` is the manifest (every run, its overrides, status, exit code and wall time).
A run whose ``results.json`` exists is skipped, so rerunning the command resumes a sweep; a failed
run is reported and the others go on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iml_hf.io import write_json_atomic
from iml_hf.recipe import RecipeError, configuration, parse_recipe

LAUNCHERS = ("local", "slurm")
#: submitit parameters that are not SLURM-specific; every other ``--slurm key=value`` becomes ``slurm_<key>``.
GENERIC_SUBMITIT_PARAMETERS = ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes", "tasks_per_node", "name")


_MANIFEST_LOCK = threading.Lock()


@dataclass
class SweepRun:
    """One run of the sweep: its seed, the ``--set`` values it takes, and what happened to it."""

    name: str
    seed: int
    overrides: dict[str, Any]
    output_dir: str
    argv: list[str]
    status: str = "pending"  # pending | done | skipped | failed
    returncode: int | None = None
    wall_time_s: float | None = None
    log: str = ""
    job_id: str | None = None

    @property
    def finished(self) -> bool:
        return (Path(self.output_dir) / "results.json").exists()


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


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` -> (key, [v1, v2]) with YAML-typed values."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r} must look like key=value1,value2")
    key, values = text.split("=", 1)
    key = key.strip().removeprefix("--")
    try:
        items = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    except yaml.YAMLError:
        raise RecipeError(f"--set {text!r}: the values (split at commas) are not valid YAML") from None
    if not items:
        raise RecipeError(f"--set {text!r} gives no values")
    return key, items


def parse_slurm(text: str) -> tuple[str, Any]:
    """``key=value`` for submitit; the value stays a string (``time=1:00:00``) unless it is an integer."""
    if "=" not in text:
        raise RecipeError(f"--slurm {text!r} must look like key=value, e.g. partition=gpu")
    key, value = text.split("=", 1)
    return key.strip(), int(value) if value.strip().isdigit() else value.strip()


def _format(value: Any) -> str:
    """A value as the command line (YAML) reads it back: null, true, 0.001, [1, 2], text."""
    return value if isinstance(value, str) else json.dumps(value)


def run_name(overrides: dict[str, Any], seed: int) -> str:
    """``key=value,key=value/seed<S>`` (or ``seed<S>`` without overrides); safe as a path."""
    combination = ",".join(f"{k}={_format(v)}".replace("/", "_").replace(" ", "") for k, v in overrides.items())
    return f"{combination}/seed{seed}" if combination else f"seed{seed}"


def plan(recipe: str, output_dir: str, seeds: list[int], sets: dict[str, list[Any]], extra: list[str],
         threads: int) -> list[SweepRun]:
    """Every (combination, seed) run, each validated by the recipe parser before anything runs."""
    runs, names = [], set()
    keys = list(sets)
    for combination in itertools.product(*(sets[k] for k in keys)):
        overrides = dict(zip(keys, combination))
        for seed in seeds:
            name = run_name(overrides, seed)
            if name in names:
                raise RecipeError(f"two runs of the grid would share the folder {name!r}; make the --set values distinct")
            names.add(name)
            out = str(Path(output_dir) / name)
            flags = [f"--{k}={_format(v)}" for k, v in overrides.items()]
            group = f"--tracker_group={Path(output_dir).resolve().name}"  # before extra: a given group wins
            argv = [recipe, group, *extra, *flags, f"--seed={seed}", f"--output_dir={out}", f"--torch_threads={threads}"]
            parse_recipe(argv, prog="iml_hf.sweep")  # a bad key or value fails here, before any run
            runs.append(SweepRun(name, seed, overrides, out, argv, log=str(Path(out) / "train.log")))
    return runs


def _execute(run: SweepRun, threads: int) -> int:
    """Run one training process, its output into the run's log; returns the exit code."""
    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    with open(run.log, "w") as log:
        done = subprocess.run([sys.executable, "-m", "iml_hf.train", *run.argv], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    return done.returncode


def run_local(sweep: Sweep, pending: list[SweepRun]) -> None:
    """``jobs`` runs at a time, each with ``threads_per_run`` torch threads."""

    def one(run: SweepRun) -> None:
        start = time.perf_counter()
        run.status = "running"
        sweep.save()
        run.returncode = _execute(run, sweep.threads_per_run)
        run.wall_time_s = round(time.perf_counter() - start, 1)
        run.status = "done" if run.returncode == 0 and run.finished else "failed"
        sweep.save()
        print(f"[{run.status}] {run.name} ({run.wall_time_s:.0f} s)" + (f", log: {run.log}" if run.status == "failed" else ""),
              flush=True)

    with ThreadPoolExecutor(max_workers=sweep.jobs) as pool:
        list(pool.map(one, pending))


def run_slurm(sweep: Sweep, pending: list[SweepRun], executor=None, slurm: dict[str, Any] | None = None) -> None:
    """Submit every pending run as a job through submitit (``executor`` may be a local or debug
    one, for tests) and wait for them; each job runs the same ``python -m iml_hf.train`` command."""
    import submitit

    if executor is None:
        slurm = dict(slurm or {})
        cluster = slurm.pop("cluster", "slurm")  # "local" or "debug" run the same jobs on this machine
        executor = submitit.AutoExecutor(folder=Path(sweep.output_dir) / "slurm_logs", cluster=cluster)
        parameters = {"cpus_per_task": sweep.threads_per_run} if cluster == "slurm" else {}
        for key, value in slurm.items():
            parameters[key if key in GENERIC_SUBMITIT_PARAMETERS else f"slurm_{key}"] = value
        executor.update_parameters(**parameters)
    jobs = []
    env = {"OMP_NUM_THREADS": str(sweep.threads_per_run), "TOKENIZERS_PARALLELISM": "false"}
    for run in pending:
        Path(run.output_dir).mkdir(parents=True, exist_ok=True)
        command = submitit.helpers.CommandFunction(
            [sys.executable, "-m", "iml_hf.train", *run.argv], verbose=False, env={**os.environ, **env}
        )
        job = executor.submit(command)
        run.status, run.job_id = "submitted", str(job.job_id)
        jobs.append((run, job, time.perf_counter()))
    sweep.save()
    for run, job, start in jobs:
        try:
            output = job.result()
            run.returncode = 0
        except Exception as error:  # a failed job: keep going with the others
            output = str(error)
            run.returncode = 1
        Path(run.log).write_text(output if isinstance(output, str) else str(output))
        run.wall_time_s = round(time.perf_counter() - start, 1)
        run.status = "done" if run.returncode == 0 and run.finished else "failed"
        sweep.save()
        print(f"[{run.status}] {run.name} (job {run.job_id})", flush=True)


def check_resumable(run: SweepRun) -> None:
    """A finished run is only skipped if it was made with the configuration planned now."""
    done = json.loads((Path(run.output_dir) / "results.json").read_text()).get("recipe", {})
    old = configuration(done)
    new = configuration(parse_recipe(run.argv, prog="iml_hf.sweep").resolved)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differing:
        raise RecipeError(
            f"{run.name} already finished with a different configuration ({', '.join(differing[:5])}); "
            "use another --output_dir or delete that run's folder"
        )


def _previous_runs(manifest: Path) -> dict[str, dict[str, Any]]:
    """Run name -> its record in an existing manifest (empty if there is none or it is unreadable)."""
    try:
        return {r["name"]: r for r in json.loads(manifest.read_text())["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.sweep", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("recipe", help="recipe YAML")
    parser.add_argument("--seeds", type=int, required=True, help="number of seeds: seed_start .. seed_start+N-1")
    parser.add_argument("--seed_start", type=int, default=0)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                        help="a recipe key and the values to sweep (repeatable; the grid is their product)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (local; default: one per CPU core)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: CPU cores // jobs, at least 1)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help="submitit/SLURM parameter, e.g. partition=gpu, timeout_min=60, gpus_per_node=1; "
                             "cluster=local or cluster=debug runs the same jobs through submitit on this machine")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    cores = os.cpu_count() or 1
    jobs = args.jobs or cores
    threads = args.threads or max(1, cores // jobs)
    try:
        if args.seeds < 1 or jobs < 1 or threads < 1:
            raise RecipeError("--seeds, --jobs and --threads must be >= 1")
        bad = [a for a in extra if not a.startswith("--")]
        if bad:
            raise RecipeError(f"unexpected argument(s) {bad}; recipe overrides look like --key=value")
        sets = dict(parse_set(s) for s in args.sets)
        slurm = dict(parse_slurm(s) for s in args.slurm)
        seeds = list(range(args.seed_start, args.seed_start + args.seeds))
        runs = plan(args.recipe, args.output_dir, seeds, sets, extra, threads)
        for run in runs:
            if run.finished:
                check_resumable(run)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sweep = Sweep(args.recipe, args.output_dir, seeds, sets, extra, args.launcher, jobs, threads, runs)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    previous = _previous_runs(Path(args.output_dir) / "sweep.json")
    for run in runs:
        if run.finished:  # resume: keep what the manifest knew about it
            old = previous.get(run.name, {})
            run.returncode, run.wall_time_s, run.job_id = old.get("returncode"), old.get("wall_time_s"), old.get("job_id")
            run.status = "skipped"
    planned = {run.name for run in runs}
    fields = set(SweepRun.__dataclass_fields__)
    kept = [SweepRun(**{k: v for k, v in record.items() if k in fields})
            for name, record in previous.items() if name not in planned]  # earlier runs stay in the manifest
    sweep.runs = runs + kept
    sweep.save()
    pending = [r for r in runs if r.status == "pending"]
    print(f"sweep: {len(runs)} runs ({len(runs) - len(pending)} already finished), {jobs} at a time, "
          f"{threads} thread(s) each, launcher {args.launcher}; manifest {Path(args.output_dir) / 'sweep.json'}",
          flush=True)
    start = time.perf_counter()
    if args.launcher == "local":
        run_local(sweep, pending)
    else:
        run_slurm(sweep, pending, slurm=slurm)
    failed = [r for r in runs if r.status == "failed"]
    print(f"sweep finished in {time.perf_counter() - start:.0f} s: "
          f"{sum(r.status == 'done' for r in runs)} done, {sum(r.status == 'skipped' for r in runs)} skipped, "
          f"{len(failed)} failed" + "".join(f"\n  failed: {r.name} (exit {r.returncode}), log {r.log}" for r in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
