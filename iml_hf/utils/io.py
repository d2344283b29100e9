"""Small shared I/O: atomic file writes and the ``metrics.jsonl`` log.

Kept free of the training stack (no torch, no transformers), so ``iml_hf.report``,
``iml_hf.sweep`` and ``iml_hf.analyze`` can import it cheaply.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place, so
    readers never see half a file (the temporary keeps the suffix, for writers that read it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None and numpy scalars as Python numbers (recursively), so
    that strict JSON parsers read what the toolkit writes: ``NaN`` is not JSON, ``null`` is."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if type(obj).__module__ == "numpy" and type(obj).__name__ in ("bool", "bool_"):  # without importing numpy
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps_strict(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``json_safe(data)`` with ``allow_nan=False``: never a bare NaN."""
    return json.dumps(json_safe(data), allow_nan=False, **kwargs)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted strict JSON (NaN/inf as null), atomically."""
    write_atomic(Path(path), lambda tmp: tmp.write_text(dumps_strict(data, indent=2, sort_keys=True) + "\n"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (``[]`` if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; only the main process writes. With
    ``seed`` every row carries the run's seed (rows of many runs can be pooled). Values are strict
    JSON: a NaN or infinite value is written as null."""

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
            f.write("".join(dumps_strict({**row, **extra}, sort_keys=True) + "\n" for row in rows))
            f.flush()


def remove_empty_dirs(root: Path) -> None:
    """Drop ``root``'s empty children and then ``root`` itself if it is empty (folders the Trainer
    created but saved nothing into)."""
    if root.is_dir():
        for folder in [*root.iterdir(), root]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
