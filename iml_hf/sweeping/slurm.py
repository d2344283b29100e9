"""The SLURM launcher: every run submitted as a job through submitit (whose local and debug
executors run the same jobs on this machine), a seed's later branches after its trunk."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from iml_hf.config import RecipeError
from iml_hf.sweeping.grid import trunk_run
from iml_hf.sweeping.interrupts import signals_ignored
from iml_hf.sweeping.manifest import Sweep, SweepRun, record_end
from iml_hf.sweeping.progress import Progress, report

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


def parse_slurm(text: str) -> tuple[str, Any]:
    """``key=value`` for submitit; the value stays a string (``time=1:00:00``) unless it is an integer."""
    if "=" not in text:
        raise RecipeError(f"--slurm {text!r} must look like key=value, e.g. partition=gpu")
    key, value = text.split("=", 1)
    return key.strip(), int(value) if value.strip().isdigit() else value.strip()


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
            report(f"[failed] {run.name}: its trunk did not finish (see {trunk.log})", failed=True)
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
            record_end(sweep, run, interrupted=False)
            progress.end(run)
            waiting.pop(0)
            report(
                progress.line(f"{run.name} (job {run.job_id}) {run.status} in {run.wall_time_s:.0f} s"),
                run.status == "failed",
            )
    except KeyboardInterrupt:
        with signals_ignored():
            for run, job, _ in waiting:  # cancel the jobs still queued or running
                try:
                    job.cancel(check=False)
                except Exception as error:  # noqa: BLE001 - best effort: the job may be gone already
                    print(f"could not cancel job {run.job_id}: {error}", file=sys.stderr)
                if not run.finished:
                    run.status = "interrupted"
            sweep.save()
        raise
