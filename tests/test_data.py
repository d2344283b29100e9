"""Stage training sets (subsets + replay shares) and padding that never enters the loss."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.config.args import StageArguments
from iml_hf.data.collators import PadCollator, stage_train_set, subset_rows
from iml_hf.data.tokenization import tokenize_corpus


@pytest.fixture(scope="module")
def tokenized(tiny_corpus, tiny_tokenizer):
    return tokenize_corpus(tiny_corpus, tiny_tokenizer)


def test_stage_set_holds_its_subsets_and_replay_shares(tokenized):
    train = tokenized["train"]
    with_subset = train.add_column("row", list(range(len(train))))
    stage = StageArguments(name="x2", train_subsets=["x2t", "x2f"], replay={"pretrain": 0.25, "x1t": 0.25})
    mixed = stage_train_set(with_subset, stage, seed=0)
    assert mixed.column_names == ["input_ids", "labels"]
    main = subset_rows(train, ["x2t", "x2f"])
    assert len(mixed) == 2 * len(main)
    # recover which subset each row came from through its token ids
    origin = {tuple(r["input_ids"]): r["subset"] for r in train}
    counts = Counter(origin[tuple(ids)] for ids in mixed["input_ids"])
    assert counts["x2t"] + counts["x2f"] == len(main)
    assert counts["pretrain"] == counts["x1t"] == len(main) // 2
    assert counts["x1f"] == 0
    again = stage_train_set(with_subset, stage, seed=0)
    assert again["input_ids"] == mixed["input_ids"]


def test_replay_is_without_replacement_while_the_pool_lasts(tokenized):
    stage = StageArguments(name="x1", train_subsets=["x1t"], replay={"x2f": 0.1})
    mixed = stage_train_set(tokenized["train"], stage, seed=1)
    pool = subset_rows(tokenized["train"], ["x2f"])
    replayed = len(mixed) - len(subset_rows(tokenized["train"], ["x1t"]))
    assert 0 < replayed <= len(pool)


def test_padding_never_enters_the_loss(tokenized, tiny_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ).eval()
    rows = [tokenized["train"][i] for i in (0, len(tokenized["train"]) - 1, 5)]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # mixed lengths: padding is needed
    batch = PadCollator(tiny_tokenizer.pad_token_id)(rows)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    padded_loss = model(**batch).loss

    total, count = 0.0, 0
    for r in rows:  # each example alone, no padding at all
        ids = torch.tensor([r["input_ids"]])
        labels = torch.tensor(r["labels"][1:])
        logits = model(ids).logits[0, :-1]
        keep = labels != -100
        total += F.cross_entropy(logits[keep], labels[keep], reduction="sum")
        count += int(keep.sum())
    torch.testing.assert_close(padded_loss, total / count)


def test_stage_without_training_rows_is_an_error(tokenized):
    without_pretrain = tokenized["train"].filter(lambda r: r["subset"] != "pretrain")
    with pytest.raises(ValueError, match="no training rows"):
        stage_train_set(without_pretrain, StageArguments(name="p", train_subsets=["pretrain"]), seed=0)
    with pytest.raises(ValueError, match="replays subset 'pretrain'"):
        stage_train_set(without_pretrain, StageArguments(name="x", train_subsets=["x1t"], replay={"pretrain": 0.5}), 0)


def test_replay_shares_must_leave_room():
    with pytest.raises(ValueError, match="sum to < 1"):
        StageArguments(name="x", train_subsets=["x1t"], replay={"pretrain": 0.6, "x2t": 0.4})
