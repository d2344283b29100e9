"""Linear probes: what a model's hidden states hold about each variable of a corpus.

Probe datasets come from the corpus alone, through the corpus contract, for any task:

* the variables are the ``key`` of the rows of kind ``definition``; a variable's subset says which
  define tag its definition carries and whether the definition is consistent, as the task declares
  it (its ``subset_meanings``, :func:`declared_labels`: the entity task's ``qd1consis`` is tag 1,
  consistent; the toy task's ``x1f`` tag ``f``, inconsistent); subsets no task declares defined
  are left out;
* its attributes are the answers of the questions about it (rows of kind ``question``, both splits,
  with its key and its referent): one target ``attribute/<relation>`` per relation (the prompt with
  the variable replaced by ``[X]``) asked about at least half the variables;
* its referent (what it stands for) is a target too, and the group of every other target: the
  folds never put one referent's variables on both sides.

Representations: each variable alone, ``[bos] + tokens(variable)``, through the model with
``output_hidden_states=True`` (no patching of model code), in float32; at every hidden state (the
embeddings' output, then each layer's, the last one after the final norm as ``transformers``
returns it) the mean over the variable's tokens, or its last token.

Probes: ``StandardScaler`` + ``LogisticRegression`` per hidden state, cross-validated over
stratified folds grouped by referent (``StratifiedGroupKFold``): accuracy per layer (the mean of
the folds' accuracies) with a t interval over folds, the chance line (the training fold's majority
class scored on the test fold) and a shuffled-label control (the same probe on permuted labels, on
the same folds). Everything is deterministic for a seed.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import DatasetDict
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from iml_hf.measure.gradients import full_precision
from iml_hf.reporting.stats import mean_ci
from iml_hf.tasks import task_registry
from iml_hf.tasks.subsets import meanings_of

ATTRIBUTE_PREFIX = "attribute/"


class ProbeError(ValueError):
    """A probe that cannot be built or fitted (too few variables, classes or groups); says why."""


def declared_labels(task: Any = None) -> dict[str, tuple[str | None, bool]]:
    """``{subset: (tag, consistent)}`` of every defined subset that ``task`` declares in its
    ``subset_meanings`` (the tag as a label; None where each definition draws a fresh tag). Without a
    task (a corpus does not say which task built it) every registered task's declaration is read;
    ProbeError when two tasks declare one subset name differently."""
    labels: dict[str, tuple[str | None, bool]] = {}
    declared_by: dict[str, str] = {}
    tasks = {task.name: task} if task is not None else task_registry()
    for name, task in tasks.items():
        for subset, meaning in meanings_of(task).items():
            if not meaning.defined:
                continue
            label = (None if meaning.tag is None else str(meaning.tag), bool(meaning.consistent))
            if labels.setdefault(subset, label) != label:
                raise ProbeError(
                    f"tasks {declared_by[subset]!r} and {name!r} declare subset {subset!r} differently "
                    f"(tag, consistent: {labels[subset]} and {label}), so its probe labels are ambiguous"
                )
            declared_by.setdefault(subset, name)
    return labels


def _find(words: list[str], part: list[str]) -> int:
    """Where the word sequence ``part`` starts in ``words``, or -1."""
    for i in range(len(words) - len(part) + 1):
        if words[i : i + len(part)] == part:
            return i
    return -1


def relation_of(prompt: str, key: str) -> str | None:
    """A question's relation: its prompt with the variable (as whole words) replaced by ``[X]``."""
    words, key_words = prompt.split(), key.split()
    at = _find(words, key_words)
    if at < 0:
        return None
    return " ".join(words[:at] + ["[X]"] + words[at + len(key_words) :])


def relation_names(relations: list[str]) -> list[str]:
    """Short, unique names of relations for targets, metric names and files: the words all of them
    share at the start and the end dropped, ``[X]`` kept (``Q: When was [X] born ? A:`` ->
    ``when_was_x_born``, ``5 [X] =`` -> ``5_x``)."""
    split = [r.split() for r in relations]
    start = end = 0
    if len(split) > 1:
        shortest = min(len(s) for s in split)
        while start < shortest - 1 and split[0][start] != "[X]" and all(s[start] == split[0][start] for s in split):
            start += 1
        while (
            end < shortest - start - 1
            and split[0][-1 - end] != "[X]"
            and all(s[-1 - end] == split[0][-1 - end] for s in split)
        ):
            end += 1
    names: list[str] = []
    for words in split:
        kept = words[start : len(words) - end]
        slug = re.sub(r"[^a-z0-9]+", "_", " ".join(kept).replace("[X]", "x").lower()).strip("_") or "x"
        name, n = slug, 2
        while name in names:
            name, n = f"{slug}_{n}", n + 1
        names.append(name)
    return names


@dataclass
class ProbeSet:
    """The variables of a corpus and what each probe target says about each one."""

    variables: list[str]
    subsets: list[str]
    referents: list[str]
    labels: dict[str, list[str | None]]  # target -> one label per variable (None: no label)
    relations: dict[str, str] = field(default_factory=dict)  # attribute target -> its relation

    def expand(self, requested: list[str]) -> list[str]:
        """The targets ``requested`` names (``attributes``: every attribute target), in order."""
        out: list[str] = []
        for target in requested:
            if target == "attributes":
                names = list(self.relations)
            elif target.startswith(ATTRIBUTE_PREFIX) and target not in self.relations:
                available = [*self.relations] or "none: no relation is asked about half the variables"
                raise ProbeError(f"no probe target {target!r} in this corpus (attribute targets: {available})")
            else:
                names = [target]
            out += [name for name in names if name not in out]
        return out

    def dataset(self, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices of the variables with a label, their labels, their groups) for ``target``; the
        referent target is grouped by variable (its labels are the referents)."""
        labels = self.labels.get(target)
        if labels is None:
            raise ProbeError(f"no probe target {target!r}")
        index = np.array([i for i, label in enumerate(labels) if label is not None], dtype=int)
        groups = self.variables if target == "referent" else self.referents
        return (
            index,
            np.array([labels[i] for i in index], dtype=object).astype(str),
            np.array([groups[i] for i in index], dtype=object).astype(str),
        )


def build_probe_set(
    corpus: DatasetDict, subsets: list[str] | None = None, min_share: float = 0.5, task: Any = None
) -> ProbeSet:
    """The probe set of a corpus (see the module docstring): the defined variables of ``subsets``
    (None: of every subset :func:`declared_labels` holds, for ``task`` when the caller knows which
    task built the corpus) and their labels; attribute targets for the relations asked about at
    least ``min_share`` of them."""
    declared = declared_labels(task)
    columns = ("prompt", "answer", "subset", "kind", "key", "referent")
    rows = [corpus[split].select_columns(list(columns)).to_dict() for split in corpus]
    definitions: dict[str, dict[str, Any]] = {}
    defined_subsets: set[str] = set()
    for table in rows:
        for i, kind in enumerate(table["kind"]):
            subset, key = table["subset"][i], table["key"][i]
            if kind != "definition" or not key or subset not in declared:
                continue
            defined_subsets.add(subset)
            if (subsets is None or subset in subsets) and key not in definitions:
                definitions[key] = {c: table[c][i] for c in columns}
    if subsets is not None:
        missing = [s for s in subsets if s not in defined_subsets]
        if missing:
            raise ProbeError(
                f"subsets {missing} have no definitions, or no task declares them defined (subset_meanings); "
                f"subsets that do: {sorted(defined_subsets) or 'none'}"
            )
    if not definitions:
        raise ProbeError(
            "the corpus has no definitions of a subset that a task declares defined (subset_meanings; "
            f"declared: {sorted(declared)})"
        )
    variables = list(definitions)
    tags: list[str | None] = []
    consistent: list[str | None] = []
    for key in variables:
        tag, consistency = declared[definitions[key]["subset"]]
        tags.append(tag)
        consistent.append("consistent" if consistency else "inconsistent")
    referents = [definitions[key]["referent"] for key in variables]
    answers: dict[str, dict[str, str]] = {}
    for table in rows:
        for i, kind in enumerate(table["kind"]):
            key = table["key"][i]
            if kind != "question" or key not in definitions or table["referent"][i] != definitions[key]["referent"]:
                continue
            relation = relation_of(table["prompt"][i], key)
            if relation is not None:
                answers.setdefault(relation, {}).setdefault(key, table["answer"][i])
    common = [r for r, by_key in answers.items() if len(by_key) >= min_share * len(variables)]
    labels: dict[str, list[str | None]] = {
        "tag": tags,
        "consistent": consistent,
        "referent": [r or None for r in referents],
    }
    relations = {}
    for name, relation in zip(relation_names(common), common):
        relations[ATTRIBUTE_PREFIX + name] = relation
        labels[ATTRIBUTE_PREFIX + name] = [answers[relation].get(key) for key in variables]
    subset_of = [definitions[key]["subset"] for key in variables]
    return ProbeSet(variables, subset_of, [r or key for r, key in zip(referents, variables)], labels, relations)


def variable_inputs(tokenizer: Any, variables: list[str]) -> tuple[list[list[int]], int]:
    """Each variable alone as the model reads a text that starts with it: ``[bos] + tokens``; and
    where the variable's tokens start (1 after BOS, 0 for a tokenizer without BOS)."""
    encoded = tokenizer(list(variables), add_special_tokens=False)["input_ids"]
    empty = [v for v, ids in zip(variables, encoded) if not ids]
    if empty:
        raise ProbeError(f"variables {empty[:5]} encode to no tokens")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [bos + list(ids) for ids in encoded], len(bos)


def hidden_representations(
    model: Any, inputs: list[list[int]], offset: int, position: str = "mean", batch_size: int = 256
) -> np.ndarray:
    """``(L + 1, N, d)`` float32: every hidden state (embeddings' output, then each layer's) of
    every input at its tokens from ``offset`` on, averaged (``position="mean"``) or the last one.
    Inputs of one length are batched together, so no padding enters; the model runs in eval mode
    under ``torch.no_grad`` in float32 (its own forward, without a mixed-precision wrapper), and
    its training mode is restored afterwards. The LM head is not run."""
    if position not in ("mean", "last"):
        raise ProbeError(f"position={position!r}; use 'mean' or 'last'")
    backbone = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = {}
    for i, sequence in enumerate(inputs):
        by_length.setdefault(len(sequence), []).append(i)
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), full_precision(model):
            for length in sorted(by_length):
                span = slice(offset, length) if position == "mean" else slice(length - 1, length)
                index = by_length[length]
                for start in range(0, len(index), batch_size):
                    chunk = index[start : start + batch_size]
                    ids = torch.tensor([inputs[i] for i in chunk], device=device)
                    states = backbone(
                        input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, use_cache=False
                    ).hidden_states
                    picked = torch.stack([h[:, span].float().mean(1) for h in states]).cpu().numpy()
                    if out is None:
                        out = np.empty((picked.shape[0], len(inputs), picked.shape[2]), dtype=np.float32)
                    out[:, chunk] = picked
    finally:
        model.train(was_training)
    if out is None:
        raise ProbeError("no variables to probe")
    bad = [i for i, layer in enumerate(out) if not np.isfinite(layer).all()]
    if bad:
        raise ProbeError(f"the hidden states hold NaN or inf at representations {bad} (a diverged model?)")
    return out


def grouped_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds in which no group has members on both sides: ``folds`` of them, or fewer
    where there are fewer groups or the largest class has fewer variables. ProbeError when there are
    fewer than two classes, two groups, or two variables in any class."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ProbeError(
            f"only one class ({str(classes[0]) if len(classes) else 'none'!r}) among {len(labels)} variables"
        )
    if counts.max() < 2:
        raise ProbeError(
            f"each of the {len(classes)} classes has a single variable: no class can be seen in "
            "training and tested on another variable"
        )
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ProbeError(f"only {n_groups} group of variables, but grouped folds need two")
    splitter = StratifiedGroupKFold(n_splits=min(folds, n_groups, int(counts.max())), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = [
            (train, test)
            for train, test in splitter.split(np.zeros(len(labels)), labels, groups)
            if len(train) and len(test)
        ]
    if len(splits) < 2:
        raise ProbeError(f"{n_groups} groups gave fewer than two non-empty folds")
    return splits


def _fit_score(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, max_iter: int
) -> float:
    """Test accuracy of a standardised logistic regression fitted on the training fold (the one
    class itself if the training fold has only one)."""
    if len(np.unique(y_train)) < 2:
        return float(np.mean(y_test == y_train[0]))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(x_train, y_train)
    return float(np.mean(probe.predict(x_test) == y_test))


def _majority(y_train: np.ndarray, y_test: np.ndarray) -> float:
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(y_test == values[np.argmax(counts)]))


def _per_layer(accuracy: np.ndarray) -> dict[str, list[float]]:
    """Per layer: the mean over folds and its 95% t interval, clipped to [0, 1] (with five folds
    the t interval of an accuracy near 0 or 1 reaches past them)."""
    summaries = [mean_ci(row) for row in accuracy]
    return {
        "mean": [s["mean"] for s in summaries],
        "ci_low": [max(0.0, s["ci_low"]) for s in summaries],
        "ci_high": [min(1.0, s["ci_high"]) for s in summaries],
    }


def score_probe(
    layers: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0, max_iter: int = 1000
) -> dict[str, Any]:
    """Probe accuracy at every representation of ``layers`` (``(L, N, d)``) for ``labels`` (N),
    over folds grouped by ``groups`` (N): per layer the mean over folds with a 95% t interval and
    every fold's accuracy; the chance line; the shuffled-label control on the same folds."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    splits = grouped_folds(labels, groups, folds, seed)
    shuffled = np.random.default_rng(seed).permutation(labels)
    accuracy = np.empty((len(layers), len(splits)))
    control = np.empty_like(accuracy)
    # one BLAS / OpenMP thread: the fits are small, and with two threads on a busy 2-core machine
    # each took 20-40 times as long (the threads wait on each other)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always")
        for i, x in enumerate(layers):
            for f, (train, test) in enumerate(splits):
                accuracy[i, f] = _fit_score(x[train], labels[train], x[test], labels[test], max_iter)
                control[i, f] = _fit_score(x[train], shuffled[train], x[test], shuffled[test], max_iter)
    for warning in caught:  # convergence is counted below; anything else is passed on
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    values, counts = np.unique(labels, return_counts=True)
    return {
        "n": len(labels),
        "groups": len(np.unique(groups)),
        "folds": len(splits),
        "classes": {str(v): int(c) for v, c in zip(values, counts)},
        "accuracy": {**_per_layer(accuracy), "folds": accuracy.tolist()},
        "chance": float(np.mean([_majority(labels[train], labels[test]) for train, test in splits])),
        "shuffled": {**_per_layer(control), "folds": control.tolist()},
        "unconverged_fits": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }
