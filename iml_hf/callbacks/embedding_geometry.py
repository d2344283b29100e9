"""Embedding geometry: cosine similarities of number and alias input embeddings.

Saves the full cosine matrix (numbers first, then aliases ordered by bucket and number) as ``.npy``
and a heatmap PNG under ``<output_dir>/embeddings/``, and logs per bucket the mean cosine between
each alias and the number it stands for (``embed_cos``) next to its mean cosine with every other
number (``embed_cos_other``, the baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, TrainerState

from iml_hf.callbacks.interval import IntervalCallback

if TYPE_CHECKING:
    from iml_hf.callbacks import MetricsLog
    from iml_hf.trainer import IMLTrainer


@dataclass
class EmbeddingLayout:
    """Which words the matrix covers, in heatmap order, and each alias's number and bucket."""

    numbers: list[str]
    aliases: list[tuple[str, str, str]]  # (alias, number, bucket)
    token_ids: list[list[int]]

    @property
    def labels(self) -> list[str]:
        return self.numbers + [alias for alias, _, _ in self.aliases]

    @property
    def row_numbers(self) -> list[str]:
        """The number each row stands for (a number itself, or the number an alias means)."""
        return self.numbers + [number for _, number, _ in self.aliases]

    @property
    def row_buckets(self) -> list[str]:
        """Each row's category: ``number`` or the alias's bucket."""
        return ["number"] * len(self.numbers) + [bucket for _, _, bucket in self.aliases]

    @classmethod
    def build(cls, aliases: list[tuple[str, str, str]], tokenizer: PreTrainedTokenizerBase, bucket_order: list[str]) -> EmbeddingLayout:
        numbers = sorted({number for _, number, _ in aliases}, key=int)
        ordered = sorted(aliases, key=lambda a: (bucket_order.index(a[2]), int(a[1]), a[0]))
        words = numbers + [alias for alias, _, _ in ordered]
        # with a leading space, as the words occur in the corpus (matters for byte-level BPE)
        ids = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        empty = [w for w, i in zip(words, ids) if not i]
        if empty:
            raise ValueError(f"the tokenizer maps {empty[:3]} to no tokens")
        return cls(numbers, ordered, ids)


def embedding_cosines(embeddings: torch.Tensor, token_ids: list[list[int]]) -> np.ndarray:
    """Cosine matrix of the words' embeddings (a word of several tokens: the mean of its tokens)."""
    with torch.no_grad():
        vectors = torch.stack([embeddings[ids].float().mean(0) for ids in token_ids])
        unit = torch.nn.functional.normalize(vectors, dim=1)
        return (unit @ unit.T).cpu().numpy()


def number_alias_cosines(matrix: np.ndarray, layout: EmbeddingLayout) -> dict[str, dict[str, float]]:
    """Per bucket: mean cosine of each alias with its own number and with all other numbers."""
    index = {n: i for i, n in enumerate(layout.numbers)}
    offset = len(layout.numbers)
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
        matrix = embedding_cosines(self.trainer.model.get_input_embeddings().weight, self.layout.token_ids)
        position = self.trainer.position(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        labels = self.folder / "labels.json"
        if not labels.exists():
            labels.write_text(json.dumps({"labels": self.layout.labels, "numbers": len(self.layout.numbers),
                                          "buckets": self.layout.row_buckets,
                                          "row_numbers": self.layout.row_numbers}))
        stem = f"{position['stage_index']}-{position['stage']}-step{position['stage_step']}"
        tmp = self.folder / f".{stem}.tmp.npy"
        np.save(tmp, matrix)
        tmp.replace(self.folder / f"{stem}.npy")
        if self.plots:
            from iml_hf.plots import save_heatmap  # matplotlib only when a plot is drawn

            title = f"input-embedding cosines, stage {position['stage']} step {position['stage_step']}"
            save_heatmap(matrix, self.layout.row_buckets, self.folder / f"{stem}.png", title)
        summary = number_alias_cosines(matrix, self.layout)
        logs: dict[str, Any] = {}
        rows = []
        for bucket, values in summary.items():
            for metric, value in values.items():
                logs[f"embedding/{bucket}/{metric}"] = value
                rows.append({**position, "subset": bucket, "metric": metric, "value": value})
        self.trainer.log(logs)
        self.metrics_log.write(rows)
        self.latest = summary
