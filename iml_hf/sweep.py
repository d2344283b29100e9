"""Run a recipe over seeds (times every combination of ``--set`` values), locally or on SLURM.

    python -m iml_hf.sweep recipes/toy.yaml --seeds 10 --output_dir runs/sweep [--jobs 2]
    python -m iml_hf.sweep RECIPE --seeds 5 --set task.modulus=40,80 --set stages.x2.max_steps=2000,3000
    python -m iml_hf.sweep RECIPE --seeds 20 --launcher slurm --slurm.partition gpu --slurm.gpus_per_node 1

Every run is ``python -m iml_hf.train RECIPE --seed S --output_dir DIR/<set values>/seed<S> ...`` in
its own process, with its log beside its folder (``.../seed<S>.log``; the sweep never creates or
deletes a run's folder, that is ``iml_hf.train``'s) and the sweep's name (DIR's) as its
``tracker_group``; ``DIR/sweep.json`` is the manifest (every run, its overrides, status, exit code
and wall time). A run whose ``results.json`` exists is skipped, so rerunning the same command
resumes a sweep: failed and interrupted runs run again (the same ``iml_hf.train`` command, which
picks up what an interrupted run left). A failed run is reported and the others go on. Ctrl-C
(SIGINT) or SIGTERM stops the running runs, records them as ``interrupted`` and exits 130 (143).
After each run starts or ends a status line says how many runs are done, running, failed and
pending, and about how long the rest will take (from the mean time of the runs finished so far);
``--quiet`` prints only failed runs, errors and the final line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.resolved import configuration, configuration_defaults, same_configuration
from iml_hf.config.run_names import format_value, sweep_run_folder
from iml_hf.utils import console
from iml_hf.utils.io import write_json_atomic

LAUNCHERS = ("local", "slurm")
#: submitit parameters that are not SLURM-specific; every other ``--slurm key=value`` becomes ``slurm_<key>``.
GENERIC_SUBMITIT_PARAMETERS = (
    "timeout_min",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "nodes",
    "tasks_per_node",
    "name",
)


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


def about(seconds: float) -> str:
    """A rough duration for an estimate: ``40 s``, ``14 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts the sweep's runs by status and estimates the time left from the runs finished so
    far; ``line`` is the status line printed after each event (readable in a log file too)."""

    def __init__(self, sweep: Sweep, workers: int):
        self.sweep = sweep
        self.workers = max(1, workers)
        self.started = time.perf_counter()
        self.running_since: dict[str, float] = {}
        self.lock = threading.Lock()

    def start(self, run: SweepRun) -> None:
        with self.lock:
            self.running_since[run.name] = time.perf_counter()

    def end(self, run: SweepRun) -> None:
        with self.lock:
            self.running_since.pop(run.name, None)

    def counts(self) -> dict[str, int]:
        """Runs done (this time or before), running, failed and pending."""
        statuses = [r.status for r in self.sweep.runs]
        return {
            "done": sum(s in ("done", "skipped") for s in statuses),
            "running": sum(s in ("running", "submitted") for s in statuses),
            "failed": sum(s == "failed" for s in statuses),
            "pending": sum(s in ("pending", "interrupted") for s in statuses),
        }

    def left(self) -> float | None:
        """Seconds until every run has ended: runs that ran in this sweep give the mean duration,
        the pending ones are queued behind the running ones on ``workers`` slots (None before any
        run has finished)."""
        times = [r.wall_time_s for r in self.sweep.runs if r.status == "done" and r.wall_time_s]
        if not times:
            return None
        mean = sum(times) / len(times)
        now = time.perf_counter()
        with self.lock:
            slots = sorted(max(mean - (now - t), 0.0) for t in self.running_since.values())
        slots = (slots + [0.0] * self.workers)[: max(self.workers, len(slots))]
        for _ in range(self.counts()["pending"]):
            slots.sort()
            slots[0] += mean
        return max(slots, default=0.0)

    def line(self, event: str) -> str:
        """``[3/10 done, 2 running, 0 failed, 5 pending] seed2 done in 275 s; about 14 min left``."""
        c = self.counts()
        left = self.left()
        estimate = (
            ""
            if not (c["running"] or c["pending"])
            else (f"; about {about(left)} left" if left is not None else "; time left known once a run has finished")
        )
        return (
            f"[{c['done']}/{len(self.sweep.runs)} done, {c['running']} running, {c['failed']} failed, "
            f"{c['pending']} pending] {event}{estimate} (elapsed {about(time.perf_counter() - self.started)})"
        )


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


def plan(
    recipe: str, output_dir: str, seeds: list[int], sets: dict[str, list[Any]], extra: list[str], threads: int
) -> list[SweepRun]:
    """Every (combination, seed) run, each validated by the recipe parser before anything runs."""
    runs, names = [], set()
    keys = list(sets)
    for combination in itertools.product(*(sets[k] for k in keys)):
        overrides = dict(zip(keys, combination))
        for seed in seeds:
            name = sweep_run_folder(overrides, seed)
            if name in names:
                raise RecipeError(
                    f"two runs of the grid would share the folder {name!r}; make the --set values distinct"
                )
            names.add(name)
            out = str(Path(output_dir) / name)
            flags = [f"--{k}={format_value(v)}" for k, v in overrides.items()]
            group = f"--tracker_group={Path(output_dir).resolve().name}"  # before extra: a given group wins
            argv = [
                recipe,
                group,
                *extra,
                *flags,
                f"--seed={seed}",
                f"--output_dir={out}",
                f"--torch_threads={threads}",
            ]
            recipe_ = parse_recipe(argv, prog="iml_hf.sweep")  # a bad key or value fails here, before any run
            if not recipe_.run.branches:
                runs.append(SweepRun(name, seed, overrides, out, argv, log=f"{out}.log"))
                continue
            for b in range(recipe_.run.branches):  # branch 0 runs the trunk first; the others wait for it
                runs.append(
                    SweepRun(
                        f"{name}/branch{b}",
                        seed,
                        overrides,
                        out,
                        [*argv, f"--only_branch={b}"],
                        log=f"{out}/branch{b}.log",
                        branch=b,
                    )
                )
    return runs


def trunk_run(run: SweepRun, runs: list[SweepRun]) -> SweepRun | None:
    """The run that trains ``run``'s trunk (branch 0 of the same seed folder), if ``run`` is a later branch."""
    if not run.branch:
        return None
    return next((r for r in runs if r.output_dir == run.output_dir and r.branch == 0), None)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM reached the sweep; ``code`` is its exit status (128 + signal)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


class Children:
    """The training processes running now, so an interrupted sweep can stop them; once
    ``stopping``, no new one starts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, command: list[str], **kwargs) -> subprocess.Popen | None:
        with self.lock:
            if self.stopping:
                return None
            process = subprocess.Popen(command, **kwargs)
            self.processes.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.processes.discard(process)

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate every running child (SIGTERM, then SIGKILL after ``grace_s``)."""
        with self.lock:
            self.stopping = True
            running = list(self.processes)
        for process in running:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _execute(run: SweepRun, threads: int, children: Children) -> int | None:
    """Run one training process, its output into the run's log; returns the exit code (None if the
    sweep was stopping and it never started). Only the log's folder is created here: the run's own
    folder is ``iml_hf.train``'s to create, resume and move into place."""
    Path(run.log).parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }  # the log follows the run
    with open(run.log, "w") as log:
        process = children.start(
            [sys.executable, "-m", "iml_hf.train", *run.argv], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        if process is None:
            return None
        try:
            return process.wait()
        finally:
            children.finished(process)


def _finish(sweep: Sweep, run: SweepRun, interrupted: bool) -> None:
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


def run_local(sweep: Sweep, pending: list[SweepRun]) -> None:
    """``jobs`` runs at a time, each with ``threads_per_run`` torch threads, with a status line
    after each run starts or ends. An interruption (KeyboardInterrupt, ``Interrupted``) stops the
    running children, records them as ``interrupted``, starts no other run and is raised again
    once the manifest says so."""
    children = Children()
    progress = Progress(sweep, sweep.jobs)
    trunks = {id(run): trunk_run(run, sweep.runs) for run in pending}
    ended = {id(run): threading.Event() for run in sweep.runs}
    for run in sweep.runs:
        if run not in pending:
            ended[id(run)].set()
    # every branch 0 (which trains its seed's trunk) first: a branch waiting for its trunk then never
    # holds a worker that its trunk's run needs
    pending = sorted(pending, key=lambda r: r.branch not in (None, 0))

    def one(run: SweepRun) -> None:
        try:
            _one(run)
        finally:
            ended[id(run)].set()

    def _one(run: SweepRun) -> None:
        if children.stopping:
            return
        trunk = trunks[id(run)]
        if trunk is not None:
            ended[id(trunk)].wait()
            if not (Path(run.output_dir) / "trunk" / "results.json").exists():
                if not children.stopping:
                    run.status = "failed"
                    sweep.save()
                    _report(
                        progress.line(f"{run.name} failed: its trunk did not finish (see {trunk.log})"), failed=True
                    )
                return
        start = time.perf_counter()
        run.status = "running"
        progress.start(run)
        sweep.save()
        console.say(progress.line(f"{run.name} started"))
        run.returncode = _execute(run, sweep.threads_per_run, children)
        progress.end(run)
        if run.returncode is None:  # never started: still pending
            run.status = "pending"
            sweep.save()
            return
        run.wall_time_s = round(time.perf_counter() - start, 1)
        _finish(sweep, run, interrupted=children.stopping)
        failed = run.status == "failed"
        _report(
            progress.line(
                f"{run.name} {run.status} in {run.wall_time_s:.0f} s" + (f", log: {run.log}" if failed else "")
            ),
            failed,
        )

    pool = ThreadPoolExecutor(max_workers=sweep.jobs)
    futures = [pool.submit(one, run) for run in pending]
    try:
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        with _signals_ignored():  # a second Ctrl-C must not cut the cleanup short
            for future in futures:
                future.cancel()
            children.stop()
            pool.shutdown(wait=True)
            sweep.save()
        raise
    pool.shutdown(wait=True)


def _report(line: str, failed: bool = False) -> None:
    """A status line: always for a failed run (also when quiet), else only when verbose."""
    if failed and not console.is_verbose():
        print(line, flush=True)
    else:
        console.say(line)


class _signals_ignored:
    """Ignore SIGINT and SIGTERM inside the block (main thread only), then restore the handlers."""

    def __enter__(self):
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.saved[signum] = signal.signal(signum, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        return False


def run_slurm(sweep: Sweep, pending: list[SweepRun], executor=None, slurm: dict[str, Any] | None = None) -> None:
    """Submit every pending run as a job through submitit (``executor`` may be a local or debug
    one, for tests) and wait for them; each job runs the same ``python -m iml_hf.train`` command.
    Branches of a branched recipe other than branch 0 go in a second wave, after their trunks."""
    import submitit

    if executor is None:
        slurm = dict(slurm or {})
        cluster = slurm.pop("cluster", "slurm")  # "local" or "debug" run the same jobs on this machine
        executor = submitit.AutoExecutor(folder=Path(sweep.output_dir) / "slurm_logs", cluster=cluster)
        parameters = {"cpus_per_task": sweep.threads_per_run} if cluster == "slurm" else {}
        for key, value in slurm.items():
            parameters[key if key in GENERIC_SUBMITIT_PARAMETERS else f"slurm_{key}"] = value
        executor.update_parameters(**parameters)
    # branch 0 of a branched seed trains its trunk: the seed's other branches are submitted once it is done
    later = [run for run in pending if trunk_run(run, sweep.runs) is not None]
    _submit_and_wait(sweep, [run for run in pending if run not in later], executor)
    ready = []
    for run in later:
        if (Path(run.output_dir) / "trunk" / "results.json").exists():
            ready.append(run)
        else:
            trunk = trunk_run(run, sweep.runs)
            assert trunk is not None, "a later run is one that has a trunk"
            run.status = "failed"
            _report(f"[failed] {run.name}: its trunk did not finish (see {trunk.log})", failed=True)
    sweep.save()
    _submit_and_wait(sweep, ready, executor)


def _submit_and_wait(sweep: Sweep, pending: list[SweepRun], executor) -> None:
    """Submit ``pending`` as submitit jobs and wait for all of them (Ctrl-C cancels those left)."""
    import submitit

    jobs = []
    progress = Progress(sweep, len(pending))
    env = {"OMP_NUM_THREADS": str(sweep.threads_per_run), "TOKENIZERS_PARALLELISM": "false"}
    for run in pending:
        Path(run.log).parent.mkdir(parents=True, exist_ok=True)
        command = submitit.helpers.CommandFunction(
            [sys.executable, "-m", "iml_hf.train", *run.argv], verbose=False, env={**os.environ, **env}
        )
        job = executor.submit(command)
        run.status, run.job_id = "submitted", str(job.job_id)
        progress.start(run)
        jobs.append((run, job, time.perf_counter()))
    sweep.save()
    waiting = list(jobs)
    try:
        while waiting:
            run, job, start = waiting[0]
            try:
                output = job.result()
                run.returncode = 0
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - a failed job: keep going with the others
                output = str(error)
                run.returncode = 1
            Path(run.log).write_text(output if isinstance(output, str) else str(output))
            run.wall_time_s = round(time.perf_counter() - start, 1)
            _finish(sweep, run, interrupted=False)
            progress.end(run)
            waiting.pop(0)
            _report(
                progress.line(f"{run.name} (job {run.job_id}) {run.status} in {run.wall_time_s:.0f} s"),
                run.status == "failed",
            )
    except KeyboardInterrupt:
        with _signals_ignored():
            for run, job, _ in waiting:  # cancel the jobs still queued or running
                try:
                    job.cancel(check=False)
                except Exception as error:  # noqa: BLE001 - best effort: the job may be gone already
                    print(f"could not cancel job {run.job_id}: {error}", file=sys.stderr)
                if not run.finished:
                    run.status = "interrupted"
            sweep.save()
        raise


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
    if differing:  # only then work out the defaults (they import the training stack's classes)
        differing = same_configuration(old, new, configuration_defaults(new_resolved))
    if differing:
        raise RecipeError(
            f"{run.name} already finished with a different configuration ({', '.join(differing[:5])}); "
            "use another --output_dir or delete that run's folder"
        )


def _previous_runs(manifest: Path) -> dict[str, dict[str, Any]]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iml_hf.sweep", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("recipe", help="recipe YAML")
    parser.add_argument("--seeds", type=int, required=True, help="number of seeds: seed_start .. seed_start+N-1")
    parser.add_argument("--seed_start", type=int, default=0)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a recipe key and the values to sweep (repeatable; the grid is their product)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (local; default: one per CPU core)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: CPU cores // jobs, at least 1)"
    )
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit/SLURM parameter, e.g. partition=gpu, timeout_min=60, gpus_per_node=1; "
        "cluster=local or cluster=debug runs the same jobs through submitit on this machine",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only errors, failed runs and the final line (each run's own log is unchanged)",
    )
    return parser


#: Recipe keys the sweep sets for every run itself (from --seeds/--seed_start, --output_dir, --threads).
SWEEP_KEYS = ("seed", "output_dir", "torch_threads")


def check_arguments(args: argparse.Namespace, extra: list[str]) -> None:
    """Every sweep argument, before anything runs or is written (RecipeError naming the flag)."""
    if args.seeds < 1:
        raise RecipeError(f"--seeds {args.seeds}: the number of seeds must be >= 1")
    if args.seed_start < 0:
        raise RecipeError(f"--seed_start {args.seed_start}: seeds must be >= 0")
    if args.jobs is not None and args.jobs < 1:
        raise RecipeError(f"--jobs {args.jobs}: runs at once must be >= 1 (leave it out for one per CPU core)")
    if args.threads is not None and args.threads < 1:
        raise RecipeError(f"--threads {args.threads}: torch threads per run must be >= 1")
    if args.launcher != "local" and args.jobs is not None:
        raise RecipeError("--jobs applies to --launcher local; SLURM runs every submitted job as the cluster allows")
    if args.launcher != "slurm" and args.slurm:
        raise RecipeError(f"--slurm {args.slurm[0]} applies to --launcher slurm only")
    if not args.output_dir.strip():
        raise RecipeError("--output_dir is empty")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise RecipeError(f"--output_dir {args.output_dir} exists and is not a folder")
    bad = [a for a in extra if not a.startswith("--")]
    if bad:
        raise RecipeError(f"unexpected argument(s) {bad}; recipe overrides look like --key=value")
    extra_keys = [a[2:].split("=", 1)[0] for a in extra]
    set_keys = [parse_set(s)[0] for s in args.sets]
    flags = {"seed": "--seeds/--seed_start", "output_dir": "--output_dir", "torch_threads": "--threads"}
    for key in [*set_keys, *extra_keys]:
        if key in SWEEP_KEYS:
            raise RecipeError(f"--{key} is set by the sweep for every run; use the sweep's {flags[key]}")
    for keys, what in ((set_keys, "--set"), (extra_keys, "a --key=value override")):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise RecipeError(f"{what} gives {twice[0]} twice; give each key once (--set {twice[0]}=v1,v2)")
    both = sorted(set(set_keys) & set(extra_keys))
    if both:
        raise RecipeError(f"{both[0]} is given both by --set and as --{both[0]}=...; keep one")


def _resume_hint(argv: list[str] | None) -> str:
    words = ["python", "-m", "iml_hf.sweep", *(sys.argv[1:] if argv is None else argv)]
    return " ".join(shlex.quote(w) for w in words)


def main(argv: list[str] | None = None) -> int:
    """Plan, check and run the sweep; the exit code (0, 1 if a run failed, 2 for bad arguments,
    130/143 when interrupted). ``--quiet`` holds for this call only."""
    verbose = console.is_verbose()
    try:
        return _main(argv)
    finally:
        console.set_verbosity(verbose)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.quiet:
        console.set_verbosity(False)
    cores = os.cpu_count() or 1
    try:
        check_arguments(args, extra)
        jobs = args.jobs if args.jobs is not None else cores
        threads = args.threads if args.threads is not None else max(1, cores // jobs)
        sets = dict(parse_set(s) for s in args.sets)
        slurm = dict(parse_slurm(s) for s in args.slurm)
        seeds = list(range(args.seed_start, args.seed_start + args.seeds))
        manifest = Path(args.output_dir) / "sweep.json"
        previous = _previous_runs(manifest)  # an unreadable manifest stops the sweep before anything is written
        runs = plan(args.recipe, args.output_dir, seeds, sets, extra, threads)
        for run in runs:
            if run.finished:
                check_resumable(run)
        planned = {run.name for run in runs}
        fields = set(SweepRun.__dataclass_fields__)
        try:  # earlier runs stay in the manifest
            kept = [
                SweepRun(**{k: v for k, v in record.items() if k in fields})
                for name, record in previous.items()
                if name not in planned
            ]
        except TypeError as error:
            raise RecipeError(
                f"{manifest} has a run record that is not a sweep run ({error}); move it aside "
                f"(e.g. mv {manifest} {manifest}.bad) and rerun the same command"
            ) from None
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sweep = Sweep(args.recipe, args.output_dir, seeds, sets, extra, args.launcher, jobs, threads, runs)
    for run in runs:
        if run.finished:  # resume: keep what the manifest knew about it
            old = previous.get(run.name, {})
            run.returncode, run.wall_time_s, run.job_id = (
                old.get("returncode"),
                old.get("wall_time_s"),
                old.get("job_id"),
            )
            run.status = "skipped"
    sweep.runs = runs + kept
    pending = [r for r in runs if r.status == "pending"]
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # SIGTERM (scancel, kill) stops the sweep as Ctrl-C does

        def interrupt(signum, frame):
            raise Interrupted(signum)

        handlers = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    try:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        sweep.save()
        console.say(
            f"sweep: {len(runs)} runs ({len(runs) - len(pending)} already finished), {jobs} at a time, "
            f"{threads} thread(s) each, launcher {args.launcher}; manifest {manifest}; each run's log "
            f"beside its folder (<run>.log)"
        )
        if args.launcher == "local":
            run_local(sweep, pending)
        else:
            run_slurm(sweep, pending, slurm=slurm)
    except KeyboardInterrupt as error:
        code = error.code if isinstance(error, Interrupted) else 130
        stopped = [r for r in runs if r.status == "interrupted"]
        left = sum(r.status in ("pending", "interrupted", "failed") for r in runs)
        print(
            f"sweep interrupted: {len(stopped)} run(s) stopped and recorded as interrupted in {manifest}, {left} "
            f"left to run; to resume, rerun the same command: {_resume_hint(argv)}",
            file=sys.stderr,
            flush=True,
        )
        return code
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    failed = [r for r in runs if r.status == "failed"]
    print(
        f"sweep finished in {time.perf_counter() - start:.0f} s: "
        f"{sum(r.status == 'done' for r in runs)} done, {sum(r.status == 'skipped' for r in runs)} skipped, "
        f"{len(failed)} failed" + "".join(f"\n  failed: {r.name} (exit {r.returncode}), log {r.log}" for r in failed)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
