"""Text exact match and token F1 of generated answers (entity QA: "1870s", "Germany", "male").

The scores come from the ``evaluate`` metric shipped in ``iml_hf/measure/metrics/qa_match``, loaded by
path (nothing is downloaded); ``generate_answers`` turns prompts into answer strings by batched
greedy decoding shared with the token-level ``iml_hf.measure.exact_match``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from iml_hf.measure.exact_match import greedy_continuations
from iml_hf.measure.metrics.qa_match.qa_match import normalize_answer

__all__ = ["QA_METRIC_PATH", "generate_answers", "load_qa_metric", "normalize_answer", "score_answers"]

QA_METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "qa_match"


@cache
def load_qa_metric() -> evaluate.EvaluationModule:
    """The ``qa_match`` metric, loaded from its folder in this package once per process (in memory,
    so concurrent processes share no cache files)."""
    return evaluate.load(str(QA_METRIC_PATH), keep_in_memory=True)


def score_answers(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example ``{"em": [...], "f1": [...]}`` (each in [0, 1]); references may join several
    acceptable answers with ``;``. Lists, so callers can sum them across processes."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references must have the same length")
    if not predictions:
        return {"em": [], "f1": []}
    scores = load_qa_metric().compute(predictions=predictions, references=references, per_example=True)
    return {"em": scores["exact_match_per_example"], "f1": scores["f1_per_example"]}


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 256,
) -> list[str]:
    """Greedy answer to each prompt: batched, left-padded decoding cut at the first EOS, decoded
    without special tokens and stripped. The model runs in eval mode, restored afterwards."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    continuations = greedy_continuations(model, prompt_ids, max_new_tokens, pad_id, eos_id, batch_size)
    answers = [c[:-1] if c and eos_id is not None and c[-1] == eos_id else c for c in continuations]
    return [text.strip() for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]
