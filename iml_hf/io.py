"""Small shared I/O: atomic file writes and the ``metrics.jsonl`` log.

Kept free of the training stack (no torch, no transformers), so ``iml_hf.report``,
``iml_hf.sweep`` and ``iml_hf.analyze`` can import it cheaply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place, so
    readers never see half a file (the temporary keeps the suffix, for writers that read it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    write_atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (``[]`` if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; only the main process writes. With
    ``seed`` every row carries the run's seed (rows of many runs can be pooled)."""

    def __init__(self, path: str | Path, enabled: bool = True, seed: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.seed = seed

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if self.seed is None else {"seed": self.seed}
        with self.path.open("a") as f:
            f.write("".join(json.dumps({**row, **extra}, sort_keys=True) + "\n" for row in rows))
            f.flush()


def remove_empty_dirs(root: Path) -> None:
    """Drop ``root``'s empty children and then ``root`` itself if it is empty (folders the Trainer
    created but saved nothing into)."""
    if root.is_dir():
        for folder in [*root.iterdir(), root]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
