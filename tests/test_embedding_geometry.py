"""Embedding geometry: the cosine matrix, its layout, the per-bucket number-alias cosines, the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_recipe
from matplotlib.image import imread
from transformers import AutoModelForCausalLM, AutoTokenizer

from iml_hf.measure.callbacks.embedding_geometry import (
    EmbeddingLayout,
    corpus_aliases,
    embedding_cosines,
    referent_alias_cosines,
)


def test_layout_orders_numbers_then_aliases_by_bucket(tiny_task, tiny_corpus, tiny_tokenizer):
    layout = EmbeddingLayout.build(corpus_aliases(tiny_corpus), tiny_tokenizer, list(tiny_task.subsets))
    assert layout.referents == [str(n) for n in range(8)]
    buckets = [b for _, _, b in layout.aliases]
    assert buckets == sorted(buckets, key=["x1t", "x1f", "x2t", "x2f"].index)
    assert len(layout.labels) == 8 + 16
    assert all(tiny_tokenizer.convert_ids_to_tokens(ids) == [w] for w, ids in zip(layout.labels, layout.token_ids))


def test_layout_uses_the_tokens_the_corpus_uses_with_a_bpe_tokenizer(tiny_task, tiny_corpus):
    from iml_hf.data.tokenization import tokenize_corpus
    from iml_hf.text_lm import train_tokenizer

    text = "\n\n".join(list(tiny_corpus["train"]["text"]) + list(tiny_corpus["test"]["text"]))
    bpe = train_tokenizer(text, vocab_size=300)
    layout = EmbeddingLayout.build(corpus_aliases(tiny_corpus), bpe, list(tiny_task.subsets))
    tokenized = tokenize_corpus(tiny_corpus, bpe)
    used = {t for split in tokenized.values() for ids in split["input_ids"] for t in ids}
    assert all(set(ids) <= used for ids in layout.token_ids)


def test_cosines_match_an_independent_computation(tiny_task, tiny_corpus, tiny_tokenizer):
    layout = EmbeddingLayout.build(corpus_aliases(tiny_corpus), tiny_tokenizer, list(tiny_task.subsets))
    weights = torch.randn(len(tiny_tokenizer), 12)
    matrix = embedding_cosines(weights, layout.token_ids)
    ids = [i[0] for i in layout.token_ids]
    expected = F.cosine_similarity(weights[ids][:, None], weights[ids][None], dim=-1).numpy()
    assert np.allclose(matrix, expected, atol=1e-6)
    # several tokens per word: the mean of their embeddings
    two = embedding_cosines(weights, [[4, 5], [6]])
    assert two[0, 1] == pytest.approx(
        F.cosine_similarity((weights[4] + weights[5]) / 2, weights[6], dim=0).item(), abs=1e-6
    )


def test_referent_alias_cosines_on_a_hand_built_embedding(tiny_task, tiny_corpus, tiny_tokenizer):
    """Aliases of x1t copy their number's embedding (cosine 1); x2f aliases point the other way."""
    layout = EmbeddingLayout.build(corpus_aliases(tiny_corpus), tiny_tokenizer, list(tiny_task.subsets))
    weights = torch.zeros(len(tiny_tokenizer), 8)
    number_ids = {n: tiny_tokenizer.convert_tokens_to_ids(n) for n in layout.referents}
    for k, n in enumerate(layout.referents):
        weights[number_ids[n], k] = 1.0  # numbers are orthonormal
    for alias, number, bucket in layout.aliases:
        vector = weights[number_ids[number]]
        weights[tiny_tokenizer.convert_tokens_to_ids(alias)] = {"x1t": vector, "x2f": -vector}.get(
            bucket, torch.ones(8)
        )
    summary = referent_alias_cosines(embedding_cosines(weights, layout.token_ids), layout)
    assert summary["x1t"] == {"embed_cos": pytest.approx(1.0), "embed_cos_other": pytest.approx(0.0)}
    assert summary["x2f"]["embed_cos"] == pytest.approx(-1.0)
    assert summary["x1f"]["embed_cos"] == pytest.approx(8**-0.5) == summary["x1f"]["embed_cos_other"]


def test_run_writes_matrices_heatmaps_and_per_bucket_cosines(monkeypatch, tmp_path):
    results, _ = run_recipe(monkeypatch, tmp_path, embedding_geometry={"enabled": True, "interval": 3})
    folder = tmp_path / "run" / "embeddings"
    stems = sorted(p.stem for p in folder.glob("*.npy"))
    assert stems == ["0-pretrain-step3", "0-pretrain-step6", "1-x1-step3", "1-x1-step4", "2-x2-step3", "2-x2-step4"]
    assert all(imread(folder / f"{s}.png").ndim == 3 for s in stems)
    assert not list(folder.glob(".*"))  # no temporary files left

    labels = json.loads((folder / "labels.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    final = np.load(folder / "2-x2-step4.npy")
    ids = tokenizer.convert_tokens_to_ids(labels["labels"])
    weights = model.get_input_embeddings().weight.detach()
    expected = F.cosine_similarity(weights[ids][:, None], weights[ids][None], dim=-1).numpy()
    assert np.allclose(final, expected, atol=1e-5)

    stage = results["stages"]["x2"]["embedding"]
    assert set(stage) == {"x1t", "x1f", "x2t", "x2f"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {
        r["subset"]: r["value"]
        for r in rows
        if r["name"].endswith("/embed_cos") and r["stage"] == "x2" and r["stage_step"] == 4
    }
    assert all(r["name"] == f"embedding/{r['subset']}/embed_cos" for r in rows if r["metric"] == "embed_cos")
    assert logged == {b: v["embed_cos"] for b, v in stage.items()}
