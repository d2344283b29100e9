"""Embedding geometry: cosine similarities of referent and alias input embeddings.

A referent is what an alias truly stands for (a number in the toy task, an entity in entity QA):
the corpus's ``referent`` column. Saves the full cosine matrix (referents first, then aliases
ordered by subset and referent) as ``.npy`` and a heatmap PNG under ``<output_dir>/embeddings/``,
and logs per subset the mean cosine between each alias and its referent (``embed_cos``) next to
its mean cosine with every other referent (``embed_cos_other``, the baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase, TrainerState

from iml_hf.data.tokenization import word_order
from iml_hf.measure.callbacks.interval import IntervalCallback
from iml_hf.utils.io import write_atomic

if TYPE_CHECKING:
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog


def corpus_aliases(corpus: DatasetDict) -> list[tuple[str, str, str]]:
    """(alias, referent, subset) for every key of the corpus that stands for something else (its
    first row's subset), read from the ``key`` and ``referent`` columns."""
    seen: dict[str, tuple[str, str, str]] = {}
    for split in corpus.values():
        for key, referent, subset, kind in zip(split["key"], split["referent"], split["subset"], split["kind"]):
            if key and referent and key != referent and kind in ("question", "definition"):
                seen.setdefault(key, (key, referent, subset))
    return list(seen.values())


@dataclass
class EmbeddingLayout:
    """Which words the matrix covers, in heatmap order, and each alias's referent and subset."""

    referents: list[str]
    aliases: list[tuple[str, str, str]]  # (alias, referent, subset)
    token_ids: list[list[int]]

    @property
    def labels(self) -> list[str]:
        return self.referents + [alias for alias, _, _ in self.aliases]

    @property
    def row_referents(self) -> list[str]:
        """What each row stands for (a referent itself, or the referent an alias means)."""
        return self.referents + [referent for _, referent, _ in self.aliases]

    @property
    def row_buckets(self) -> list[str]:
        """Each row's category: ``referent`` or the alias's subset."""
        return ["referent"] * len(self.referents) + [bucket for _, _, bucket in self.aliases]

    @classmethod
    def build(
        cls, aliases: list[tuple[str, str, str]], tokenizer: PreTrainedTokenizerBase, bucket_order: list[str]
    ) -> EmbeddingLayout:
        if not aliases:
            raise ValueError("embedding_geometry needs a corpus whose keys have referents (aliases); this one has none")
        referents = sorted({referent for _, referent, _ in aliases}, key=word_order)
        rank = {s: i for i, s in enumerate(bucket_order)}
        ordered = sorted(aliases, key=lambda a: (rank.get(a[2], len(rank)), a[2], word_order(a[1]), a[0]))
        words = referents + [alias for alias, _, _ in ordered]
        # with a leading space, as the words occur in the corpus (matters for byte-level BPE)
        ids = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        empty = [w for w, i in zip(words, ids) if not i]
        if empty:
            raise ValueError(f"the tokenizer maps {empty[:3]} to no tokens")
        return cls(referents, ordered, ids)


def embedding_cosines(embeddings: torch.Tensor, token_ids: list[list[int]]) -> np.ndarray:
    """Cosine matrix of the words' embeddings (a word of several tokens: the mean of its tokens)."""
    with torch.no_grad():
        vectors = torch.stack([embeddings[ids].float().mean(0) for ids in token_ids])
        unit = torch.nn.functional.normalize(vectors, dim=1)
        return (unit @ unit.T).cpu().numpy()


def referent_alias_cosines(matrix: np.ndarray, layout: EmbeddingLayout) -> dict[str, dict[str, float]]:
    """Per subset: mean cosine of each alias with its own referent and with all other referents."""
    index = {n: i for i, n in enumerate(layout.referents)}
    offset = len(layout.referents)
    own: dict[str, list[float]] = {}
    other: dict[str, list[float]] = {}
    for k, (_, number, bucket) in enumerate(layout.aliases):
        row = matrix[offset + k, :offset]
        own.setdefault(bucket, []).append(float(row[index[number]]))
        other.setdefault(bucket, []).append(float((row.sum() - row[index[number]]) / (offset - 1)))
    return {b: {"embed_cos": float(np.mean(own[b])), "embed_cos_other": float(np.mean(other[b]))} for b in own}


class EmbeddingGeometryCallback(IntervalCallback):
    """Writes ``embeddings/<index>-<stage>-step<N>.npy`` (+ ``.png``) and logs
    ``embedding/<bucket>/embed_cos`` and ``embed_cos_other``."""

    label = "embedding geometry"

    main_process_only = True

    def __init__(
        self,
        trainer: IMLTrainer,
        layout: EmbeddingLayout,
        metrics_log: MetricsLog,
        output_dir: str | Path,
        interval: int = 0,
        strategy: str = "steps",
        plots: bool = True,
    ):
        super().__init__(trainer, metrics_log, interval, strategy)
        self.layout = layout
        self.folder = Path(output_dir) / "embeddings"
        self.plots = plots
        self.latest: dict[str, dict[str, float]] = {}

    def measure(self, state: TrainerState) -> None:
        matrix = embedding_cosines(self.trainer.model.get_input_embeddings().weight, self.layout.token_ids)  # type: ignore[arg-type]  # a Tensor: transformers types the embedding as a bare nn.Module
        position = self.trainer.position(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        labels = self.folder / "labels.json"
        if not labels.exists():
            labels.write_text(
                json.dumps(
                    {
                        "labels": self.layout.labels,
                        "referents": len(self.layout.referents),
                        "buckets": self.layout.row_buckets,
                        "row_referents": self.layout.row_referents,
                    }
                )
            )
        stem = f"{position['stage_index']}-{position['stage']}-step{position['stage_step']}"
        write_atomic(self.folder / f"{stem}.npy", lambda tmp: np.save(tmp, matrix))
        if self.plots:
            from iml_hf.reporting.plots import (  # matplotlib only when a plot is drawn
                RUN_DPI,
                RUN_FORMATS,
                save_heatmap,
            )

            title = f"input-embedding cosines, stage {position['stage']} step {position['stage_step']}"
            save_heatmap(matrix, self.layout.row_buckets, self.folder / f"{stem}.png", title, RUN_DPI, RUN_FORMATS)
        summary = referent_alias_cosines(matrix, self.layout)
        self.emit(
            state,
            "embedding",
            [(bucket, metric, value, {}) for bucket, values in summary.items() for metric, value in values.items()],
        )
        self.latest = summary
