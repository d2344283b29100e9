"""The sweep's status lines: runs done, running, failed and pending, and about how long the rest will take."""

from __future__ import annotations

import threading
import time

from iml_hf.sweeping.manifest import Sweep, SweepRun
from iml_hf.utils import console


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


def report(line: str, failed: bool = False) -> None:
    """A status line: always for a failed run (also when quiet), else only when verbose."""
    if failed and not console.is_verbose():
        print(line, flush=True)
    else:
        console.say(line)
