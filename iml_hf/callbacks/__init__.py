"""Trainer callbacks that measure IML during training, and the metrics.jsonl they append to."""

from __future__ import annotations

from iml_hf.callbacks.embedding_geometry import EmbeddingGeometryCallback, EmbeddingLayout, corpus_aliases
from iml_hf.callbacks.grad_alignment import GradientAlignmentCallback, alignment_probes
from iml_hf.callbacks.subset_em import SubsetEMCallback
from iml_hf.io import MetricsLog

__all__ = [
    "EmbeddingGeometryCallback",
    "EmbeddingLayout",
    "GradientAlignmentCallback",
    "MetricsLog",
    "SubsetEMCallback",
    "alignment_probes",
    "corpus_aliases",
]
