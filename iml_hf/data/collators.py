"""Training sets of a stage (its subsets plus replayed ones) and the padding collator."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets

from iml_hf.config.args import StageArguments
from iml_hf.data.tokenization import IGNORE_INDEX

TRAIN_COLUMNS = ("input_ids", "labels")


def subset_rows(split: Dataset, subsets: list[str], kinds: list[str] | None = None) -> Dataset:
    """Rows of ``split`` whose ``subset`` is one of ``subsets`` (and whose ``kind`` is one of
    ``kinds``, if given), in corpus order."""
    wanted = set(subsets)
    kept_kinds = set(kinds) if kinds else None
    indices = [
        i
        for i, (name, kind) in enumerate(zip(split["subset"], split["kind"]))
        if name in wanted and (kept_kinds is None or kind in kept_kinds)
    ]
    return split.select(indices)


def stage_train_set(train: Dataset, stage: StageArguments, seed: int) -> Dataset:
    """The stage's training rows plus replayed rows, so that replayed subset ``s`` makes up
    ``stage.replay[s]`` of the result (drawn without replacement while possible)."""
    main = subset_rows(train, stage.train_subsets, stage.train_kinds)
    if len(main) == 0:
        kinds = f" of kinds {stage.train_kinds}" if stage.train_kinds else ""
        raise ValueError(f"stage {stage.name!r} trains on {stage.train_subsets}, which have no training rows{kinds}")
    parts = [main]
    rng = np.random.default_rng(seed)
    scale = len(main) / (1.0 - sum(stage.replay.values()))
    for name, share in sorted(stage.replay.items()):
        pool = subset_rows(train, [name])
        if len(pool) == 0:
            raise ValueError(f"stage {stage.name!r} replays subset {name!r}, which has no training rows")
        count = round(share * scale)
        picks = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))])[:count]
        parts.append(pool.select(picks.tolist()))
    mixed = concatenate_datasets(parts)
    return mixed.select_columns(list(TRAIN_COLUMNS))


class PadCollator:
    """Right-pads ``input_ids`` with the pad id and ``labels`` with -100, so padding never enters
    the loss. Much faster than ``tokenizer.pad`` for the many tiny batches of the toy task."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        pads = [length - len(f["input_ids"]) for f in features]
        input_ids = [f["input_ids"] + [self.pad_token_id] * n for f, n in zip(features, pads)]
        labels = [f["labels"] + [IGNORE_INDEX] * n for f, n in zip(features, pads)]
        mask = [[1] * (length - n) + [0] * n for n in pads]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }
