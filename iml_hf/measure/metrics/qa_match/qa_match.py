"""SQuAD-style exact match and token F1 of generated answers, as an ``evaluate`` metric.

A reference may hold several acceptable answers joined with ``;``; each prediction scores the best
over them. Self-contained (standard library, ``datasets`` and ``evaluate`` only) because
``evaluate.load`` copies this one file into its modules cache. One import per line: evaluate's
dependency scan misreads ``import a, b``.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import datasets
import evaluate

ANSWER_SEPARATOR = ";"

_DESCRIPTION = """\
Exact match and token-level F1 of predicted answer strings against references, after SQuAD
normalisation (lower-case, punctuation removed, articles a/an/the dropped, whitespace collapsed).
A reference may list several acceptable answers separated by ";"; the best one counts.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of str): generated answers.
    references (list of str): acceptable answers, several joined with ";".
    per_example (bool, default False): also return the per-example scores, e.g. to sum them
        across processes instead of averaging means.
Returns:
    exact_match (float): mean exact match, in [0, 1] (0.0 when there are no examples).
    f1 (float): mean token F1, in [0, 1].
    exact_match_per_example (list of float): only with per_example=True.
    f1_per_example (list of float): only with per_example=True.
Examples:
    >>> metric = evaluate.load("path/to/iml_hf/measure/metrics/qa_match")
    >>> metric.compute(predictions=["Germany"], references=["france;germany"])
    {'exact_match': 1.0, 'f1': 1.0}
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP",
    year = "2016",
}
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, strip punctuation, drop articles, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def split_references(reference: str) -> list[str]:
    """The acceptable answers in a ``;``-joined reference (empty pieces dropped unless all are)."""
    answers = [a.strip() for a in reference.split(ANSWER_SEPARATOR)]
    return [a for a in answers if a] or [""]


def exact_match_score(prediction: str, answer: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def f1_score(prediction: str, answer: str) -> float:
    """Token F1 of the normalised strings (bag of words); 1.0 if both are empty, 0.0 if one is."""
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(answer).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_scores(prediction: str, reference: str) -> tuple[float, float]:
    """(EM, F1) of a prediction, each the maximum over the reference's acceptable answers."""
    answers = split_references(reference)
    return max(exact_match_score(prediction, a) for a in answers), max(f1_score(prediction, a) for a in answers)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class QAMatch(evaluate.Metric):
    """SQuAD-style exact match and token F1 with ``;``-separated alternative answers."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str], per_example: bool = False) -> dict:
        scores = [best_scores(p, r) for p, r in zip(predictions, references)]
        em = [s[0] for s in scores]
        f1 = [s[1] for s in scores]
        n = len(scores)
        out: dict = {"exact_match": sum(em) / n if n else 0.0, "f1": sum(f1) / n if n else 0.0}
        if per_example:
            out["exact_match_per_example"] = em
            out["f1_per_example"] = f1
        return out
