"""The local launcher: a pool of ``jobs`` training processes at a time on this machine, stopped
together when the sweep is interrupted."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from iml_hf.sweeping.grid import trunk_run
from iml_hf.sweeping.interrupts import signals_ignored
from iml_hf.sweeping.manifest import Sweep, SweepRun, record_end
from iml_hf.sweeping.progress import Progress, report
from iml_hf.utils import console


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
                    report(progress.line(f"{run.name} failed: its trunk did not finish (see {trunk.log})"), failed=True)
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
        record_end(sweep, run, interrupted=children.stopping)
        failed = run.status == "failed"
        report(
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
        with signals_ignored():  # a second Ctrl-C must not cut the cleanup short
            for future in futures:
                future.cancel()
            children.stop()
            pool.shutdown(wait=True)
            sweep.save()
        raise
    pool.shutdown(wait=True)
