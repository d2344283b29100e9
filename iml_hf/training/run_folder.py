"""The run folder: one writer at a time, a work folder beside it, resuming, and the final swap.

A run into ``DIR`` holds an exclusive lock on ``DIR.lock`` for its whole life and writes
everything into ``DIR.partial/``; ``DIR`` itself is only touched when the run has finished
(results.json, model and card written): the old ``DIR`` is renamed to ``DIR.replaced``, the
work folder renamed to ``DIR`` and the old one deleted. ``DIR.partial/progress.json`` (the
marker) records the resolved recipe, every finished stage's results entry and the step offset;
a rerun of the same command finds it, checks that the recipe computes the same thing
(``iml_hf.config.resolved.configuration``) and resumes from the last finished stage or the current
stage's last complete checkpoint (``checkpoints/<stage>/checkpoint-N/resume.json``).

Kept free of torch and transformers (the pipeline does the training side). The lock is
``filelock``'s (portable, and released by the operating system when a killed run's process dies).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from iml_hf.config.resolved import configuration
from iml_hf.utils.io import write_atomic, write_json_atomic

#: The marker of a work folder, written when it is created and rewritten at every stage end.
PROGRESS = "progress.json"
#: Written into a checkpoint folder once everything of that checkpoint is on disk.
CHECKPOINT_MARKER = "resume.json"
#: Files another tool puts into a run's folder before the run starts (the sweep's log of the
#: run, still open for writing): they do not make the folder foreign and move into the new folder.
CARRIED = ("train.log",)


class FolderError(ValueError):
    """A run folder that this run must not write into; the message says why and what to do."""


class RunFolder:
    """``output_dir`` and its siblings ``.partial`` (the work folder), ``.lock`` and ``.replaced``."""

    def __init__(self, output_dir: str | os.PathLike):
        self.out = Path(os.path.abspath(output_dir))
        self.work = self.out.with_name(self.out.name + ".partial")
        self.lock_path = self.out.with_name(self.out.name + ".lock")
        self.replaced = self.out.with_name(self.out.name + ".replaced")
        self._lock: FileLock | None = None

    # ---- the lock -------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the folder's exclusive lock (non-blocking); another live run holding it is an error."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.lock_path, timeout=0)  # flock on Unix, msvcrt on Windows; freed if the process dies
        try:
            lock.acquire()
        except Timeout:
            raise FolderError(
                f"another run is writing into {self.out} right now (it holds {self.lock_path}); "
                "wait for it to finish or choose another --output_dir"
            ) from None
        self._lock = lock

    def release(self, remove: bool = False) -> None:
        """Release the lock (``remove``: delete the lock file first, once the run is finished)."""
        if self._lock is not None:
            if remove:
                self.lock_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    # ---- what is there ----------------------------------------------------------------------
    def progress(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.work / PROGRESS).read_text())
        except (OSError, ValueError):
            return None

    def plan(self, resolved: dict[str, Any], stage_names: list[str], overwrite: bool) -> dict[str, Any]:
        """Check ``output_dir`` and the work folder without changing anything, and say how this run
        starts: ``{"resume": bool, "finished": bool, "stages": {name: entry}, "step_offset": int,
        "index": first stage to train, "checkpoint": path or None, "weights": folder or None}``."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise FolderError(f"output_dir {out} is a file, not a folder")
        entries = [p.name for p in out.iterdir()] if out.is_dir() else []
        own = [name for name in entries if name not in CARRIED]
        if (out / "results.json").is_file():
            if not overwrite:
                raise FolderError(
                    f"output_dir {out} holds a finished run (results.json); pass --overwrite_output_dir=true "
                    "to replace it once the new run has finished, or choose another --output_dir"
                )
        elif own:
            shown = ", ".join(sorted(own)[:5]) + (", ..." if len(own) > 5 else "")
            raise FolderError(
                f"output_dir {out} is not empty ({shown}) and holds no iml_hf run (no results.json); "
                "nothing was changed: choose a new or empty --output_dir"
            )
        plan: dict[str, Any] = {
            "resume": False,
            "finished": False,
            "stages": {},
            "step_offset": 0,
            "index": 0,
            "checkpoint": None,
            "weights": None,
        }
        if not self.work.exists():
            return plan
        progress = self.progress()
        if progress is None:
            if self.work.is_dir() and not any(self.work.iterdir()):
                return plan
            raise FolderError(
                f"{self.work} exists but is not the work folder of an iml_hf run (no {PROGRESS}); "
                "move it away or choose another --output_dir"
            )
        old, new = configuration(progress["recipe"]), configuration(resolved)
        differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if differing:
            shown = ", ".join(differing[:8]) + (", ..." if len(differing) > 8 else "")
            raise FolderError(
                f"{self.work} holds a partial run of another recipe (differing keys: {shown}); rerun that "
                f"command to finish it, or delete {self.work} to start this one"
            )
        finished = {name: progress["stages"][name] for name in stage_names if name in progress["stages"]}
        index = len(finished)
        if list(finished) != stage_names[:index]:
            raise FolderError(f"{self.work}: finished stages {list(progress['stages'])} do not match {stage_names}")
        plan.update(
            resume=True,
            stages=finished,
            step_offset=progress["step_offset"],
            index=index,
            finished=(self.work / "results.json").is_file(),
            trunk=progress.get("trunk"),
        )
        if index:
            plan["weights"] = str(self.work / "resume" / stage_names[index - 1])
        if index < len(stage_names):
            plan["checkpoint"] = self.last_checkpoint(stage_names[index])
        return plan

    def checkpoint_dir(self, stage: str) -> Path:
        return self.work / "checkpoints" / stage

    def last_checkpoint(self, stage: str) -> str | None:
        """The stage's newest complete checkpoint (one with its marker), or None."""
        folder = self.checkpoint_dir(stage)
        complete = (
            [p for p in folder.glob("checkpoint-*") if (p / CHECKPOINT_MARKER).is_file()] if folder.is_dir() else []
        )
        return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None

    # ---- writing --------------------------------------------------------------------------
    def start(self, resolved: dict[str, Any], plan: dict[str, Any]) -> None:
        """Create the work folder with its marker, or prepare a resumed one: drop the metrics rows
        written after the point this run resumes from (the stage's checkpoint, or its start)."""
        if not plan["resume"]:
            self.work.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.work / PROGRESS, {"recipe": resolved, "stages": {}, "step_offset": 0})
            return
        if plan["finished"]:
            return
        step = int(Path(plan["checkpoint"]).name.split("-")[-1]) if plan["checkpoint"] else 0
        truncate_metrics(self.work / "metrics.jsonl", plan["index"], step)

    def record_stage(self, name: str, entry: dict[str, Any], step_offset: int, stage_names: list[str]) -> None:
        """A finished stage: its results entry and the step offset go into the marker; its
        checkpoints and the earlier stage's weights are no longer needed."""
        progress = self.progress()
        assert progress is not None, f"start() wrote {PROGRESS}"
        progress["stages"][name] = json.loads(json.dumps(entry))
        progress["step_offset"] = step_offset
        write_json_atomic(self.work / PROGRESS, progress)
        shutil.rmtree(self.checkpoint_dir(name), ignore_errors=True)
        for earlier in stage_names[: stage_names.index(name)]:
            shutil.rmtree(self.work / "resume" / earlier, ignore_errors=True)

    def finish(self, keep_checkpoints: bool) -> None:
        """Drop the resume state and put the work folder in place of ``output_dir``: the old
        folder renamed aside, the new one renamed in, the old one deleted."""
        shutil.rmtree(self.work / "resume", ignore_errors=True)
        if not keep_checkpoints:
            shutil.rmtree(self.work / "checkpoints", ignore_errors=True)
        shutil.rmtree(self.replaced, ignore_errors=True)  # left by a run killed during its swap
        if self.out.exists():
            os.rename(self.out, self.replaced)
            for name in CARRIED:
                if (self.replaced / name).exists() and not (self.work / name).exists():
                    os.rename(self.replaced / name, self.work / name)
        os.rename(self.work, self.out)
        (self.out / PROGRESS).unlink(missing_ok=True)
        shutil.rmtree(self.replaced, ignore_errors=True)


def truncate_metrics(path: Path, stage_index: int, stage_step: int) -> None:
    """Keep the rows of earlier stages and of stage ``stage_index`` up to ``stage_step`` (the
    point training resumes from); a line cut short by a killed writer is dropped too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row["stage_index"] < stage_index or (row["stage_index"] == stage_index and row["stage_step"] <= stage_step):
            kept.append(line)
    write_atomic(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))
