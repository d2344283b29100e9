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
import os
import shlex
import sys
import time
from pathlib import Path

from iml_hf.config import RecipeError
from iml_hf.sweeping.grid import parse_set, plan
from iml_hf.sweeping.interrupts import Interrupted, signals_interrupt
from iml_hf.sweeping.local import run_local
from iml_hf.sweeping.manifest import Sweep, SweepRun, check_resumable, earlier_runs, mark_skipped, previous_runs
from iml_hf.sweeping.slurm import parse_slurm, run_slurm
from iml_hf.utils import console

LAUNCHERS = ("local", "slurm")


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
    args, extra = build_parser().parse_known_args(argv)
    if args.quiet:
        console.set_verbosity(False)
    try:
        check_arguments(args, extra)
        slurm = dict(parse_slurm(s) for s in args.slurm)
        sweep, runs = _plan(args, extra)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manifest = Path(args.output_dir) / "sweep.json"
    pending = [r for r in runs if r.status == "pending"]
    with signals_interrupt():  # SIGTERM (scancel, kill) stops the sweep as Ctrl-C does
        start = time.perf_counter()
        try:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            sweep.save()
            console.say(
                f"sweep: {len(runs)} runs ({len(runs) - len(pending)} already finished), {sweep.jobs} at a time, "
                f"{sweep.threads_per_run} thread(s) each, launcher {args.launcher}; manifest {manifest}; each run's log "
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
    failed = [r for r in runs if r.status == "failed"]
    print(
        f"sweep finished in {time.perf_counter() - start:.0f} s: "
        f"{sum(r.status == 'done' for r in runs)} done, {sum(r.status == 'skipped' for r in runs)} skipped, "
        f"{len(failed)} failed" + "".join(f"\n  failed: {r.name} (exit {r.returncode}), log {r.log}" for r in failed)
    )
    return 1 if failed else 0


def _plan(args: argparse.Namespace, extra: list[str]) -> tuple[Sweep, list[SweepRun]]:
    """The manifest to write (the runs planned now, then an earlier manifest's other runs) and the runs
    planned now, finished ones checked against the plan and marked skipped (RecipeError if one differs)."""
    cores = os.cpu_count() or 1
    jobs = args.jobs if args.jobs is not None else cores
    threads = args.threads if args.threads is not None else max(1, cores // jobs)
    sets = dict(parse_set(s) for s in args.sets)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    manifest = Path(args.output_dir) / "sweep.json"
    previous = previous_runs(manifest)  # an unreadable manifest stops the sweep before anything is written
    runs = plan(args.recipe, args.output_dir, seeds, sets, extra, threads, check_training=args.launcher == "local")
    for run in runs:
        if run.finished:
            check_resumable(run)
    kept = earlier_runs(manifest, previous, runs)
    mark_skipped(runs, previous)
    return Sweep(args.recipe, args.output_dir, seeds, sets, extra, args.launcher, jobs, threads, runs + kept), runs


if __name__ == "__main__":
    sys.exit(main())
