"""Trainer callbacks that measure IML during training, and the metrics.jsonl they append to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; only the main process writes."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")


from iml_hf.callbacks.embedding_geometry import EmbeddingGeometryCallback, EmbeddingLayout, corpus_aliases  # noqa: E402
from iml_hf.callbacks.grad_alignment import GradientAlignmentCallback, alignment_probes  # noqa: E402
from iml_hf.callbacks.subset_em import SubsetEMCallback  # noqa: E402

__all__ = [
    "EmbeddingGeometryCallback",
    "EmbeddingLayout",
    "GradientAlignmentCallback",
    "MetricsLog",
    "SubsetEMCallback",
    "alignment_probes",
    "corpus_aliases",
]
