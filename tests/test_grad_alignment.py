"""The gradient-alignment sample and callback: pairs share an alias, logged values are exact."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RECIPE, build_tiny_model, loop_gradients, run_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer

from iml_hf.config import parse_recipe
from iml_hf.data.corpus import load_or_build_corpus
from iml_hf.data.tokenization import tokenize_corpus
from iml_hf.measure.callbacks.grad_alignment import alignment_samples, measure_alignment
from iml_hf.reporting.stats import mean_ci


@pytest.fixture(scope="module")
def tokenized(tiny_corpus, tiny_tokenizer):
    return tokenize_corpus(tiny_corpus, tiny_tokenizer)


def test_samples_pair_each_definition_with_questions_about_its_alias(tokenized, tiny_tokenizer):
    samples = alignment_samples(
        tokenized, tiny_tokenizer.pad_token_id, None, aliases_per_subset=3, questions_per_alias=2, seed=5
    )
    assert list(samples) == ["x1t", "x1f", "x2t", "x2f"]
    train_texts = set(tokenized["train"]["text"])
    for subset, sample in samples.items():
        n = sample.num_definitions
        assert n == 3 and len(sample.pairs) == 6 and len(sample.batch) == 9
        assert all(r["kind"] == "definition" and r["subset"] == subset for r in sample.rows[:n])
        assert all(r["kind"] == "question" and r["subset"] == subset for r in sample.rows[n:])
        for d, q in sample.pairs:
            assert d < n <= q and sample.rows[d]["key"] == sample.rows[q]["key"]
        if subset.startswith("x2"):  # X2 questions are never trained on: all come from the test split
            assert not train_texts & {r["text"] for r in sample.rows[n:]}
        assert torch.equal(
            sample.batch.input_ids[0, : len(sample.rows[0]["input_ids"])], torch.tensor(sample.rows[0]["input_ids"])
        )
    again = alignment_samples(tokenized, tiny_tokenizer.pad_token_id, None, 3, 2, seed=5)
    assert all(torch.equal(again[s].batch.input_ids, samples[s].batch.input_ids) for s in samples)
    other = alignment_samples(tokenized, tiny_tokenizer.pad_token_id, ["x2t"], 3, 2, seed=6)
    assert list(other) == ["x2t"]


def _independent(model, sample) -> tuple[list[float], float]:
    """Pair cosines and the mean-gradient cosine from the batch-size-1 loop."""
    grads = loop_gradients(model, sample.batch)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    pairs = [F.cosine_similarity(flat[d], flat[q], dim=0).item() for d, q in sample.pairs]
    n = sample.num_definitions
    mean = F.cosine_similarity(flat[:n].mean(0), flat[n:].mean(0), dim=0).item()
    return pairs, mean


def test_measure_alignment_matches_loop(tokenized, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture="llama")
    samples = alignment_samples(tokenized, tiny_tokenizer.pad_token_id, None, 3, 2, seed=0)
    result = measure_alignment(model, samples)
    for subset, sample in samples.items():
        pairs, mean = _independent(model, sample)
        summary = result["pairs"][subset]["all"]
        expected = mean_ci(pairs)
        assert summary["n"] == len(pairs) == 6
        for key in ("mean", "ci_low", "ci_high"):
            assert summary[key] == pytest.approx(expected[key], abs=1e-5)
        assert result["mean_gradient"][subset]["all"]["cosine"] == pytest.approx(mean, abs=1e-5)
        assert {"embeddings", "attention", "mlp", "norms"} <= set(result["pairs"][subset])
        per_alias = [sum(pairs[2 * k : 2 * k + 2]) / 2 for k in range(3)]  # 2 questions per alias, in order
        by_alias, expected_alias = result["aliases"][subset]["all"], mean_ci(per_alias)
        assert by_alias["n"] == 3
        for key in ("mean", "ci_low", "ci_high"):
            assert by_alias[key] == pytest.approx(expected_alias[key], abs=1e-5)


def test_callback_logs_every_subset_and_group_through_all_stages(monkeypatch, tmp_path):
    results, path = run_recipe(
        monkeypatch,
        tmp_path,
        gradient_alignment={"enabled": True, "interval": 2, "aliases_per_subset": 3, "questions_per_alias": 2},
    )

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    align = [r for r in rows if r["family"] == "grad_align"]
    points = sorted({(r["stage_index"], r["stage_step"]) for r in align})
    assert points == [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (2, 2), (2, 4)]
    assert {r["subset"] for r in align} == {"x1t", "x1f", "x2t", "x2f"}
    assert {r["metric"] for r in align} >= {"all", "embeddings", "attention"}
    assert all(r["name"] == f"grad_align/{r['subset']}/{r['metric']}" for r in align)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n"] == 6 for r in align)
    assert any(r["family"] == "grad_align_mean" and r["metric"] == "all" for r in rows)

    # the values logged at the end of the last stage are those of the saved model
    out = tmp_path / "run"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    parsed = parse_recipe([str(path)])
    corpus = load_or_build_corpus(parsed.task, 0)
    samples = alignment_samples(tokenize_corpus(corpus, tokenizer), tokenizer.pad_token_id, None, 3, 2, seed=0)
    for subset, sample in samples.items():
        pairs, mean = _independent(model, sample)
        logged = next(
            r
            for r in align
            if r["subset"] == subset and r["metric"] == "all" and (r["stage_index"], r["stage_step"]) == (2, 4)
        )
        assert logged["value"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-5)
        final = results["stages"]["x2"]["grad_align"]
        assert final["pairs"][subset]["all"]["mean"] == logged["value"]
        assert final["mean_gradient"][subset]["all"]["cosine"] == pytest.approx(mean, abs=1e-5)


def test_epoch_interval(monkeypatch, tmp_path):
    results, _ = run_recipe(
        monkeypatch,
        tmp_path,
        stages=[{"name": "x1", "train_subsets": ["x1t", "x1f"], "num_train_epochs": 3}],
        gradient_alignment={
            "enabled": True,
            "interval": 1,
            "interval_strategy": "epoch",
            "aliases_per_subset": 2,
            "questions_per_alias": 1,
            "subsets": ["x1t"],
        },
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = sorted({r["epoch"] for r in rows if r["name"] == "grad_align/x1t/all"})
    steps = results["stages"]["x1"]["steps"]
    assert epochs == [1.0, 2.0, 3.0] and steps % 3 == 0  # after epochs 1 and 2, and at the end


def test_measurements_stay_float32_and_exact_under_bf16_mixed_precision(monkeypatch, tmp_path):
    """accelerate wraps forward in bf16 autocast; the measurements use the model's own forward."""
    results, path = run_recipe(
        monkeypatch,
        tmp_path,
        training={**TINY_RECIPE["training"], "bf16": True, "use_cpu": True},
        stages=TINY_RECIPE["stages"][:2],
        gradient_alignment={"enabled": True, "aliases_per_subset": 3, "questions_per_alias": 2},
        layer_analysis={"enabled": True, "min_position": 1, "max_tokens": 100, "linear_model_tokens": 2},
    )
    out = tmp_path / "run"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    corpus = load_or_build_corpus(parse_recipe([str(path)]).task, 0)
    samples = alignment_samples(tokenize_corpus(corpus, tokenizer), tokenizer.pad_token_id, None, 3, 2, seed=0)
    for subset, sample in samples.items():
        pairs, _ = _independent(model, sample)
        logged = results["stages"]["x1"]["grad_align"]["pairs"][subset]["all"]["mean"]
        assert logged == pytest.approx(sum(pairs) / len(pairs), abs=1e-5)
    assert "inner_loss" in results["stages"]["x1"]["layers"]
