"""The digits QA corpus: images per seed, strips per row kind, targets, held-out questions, MNIST pooling."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from iml_hf.corpus import corpus_fingerprint
from iml_hf.tasks import digits_qa
from iml_hf.tasks.digits_qa import DEFINED, STRIP_ROWS, DigitsQATask, quantise, sklearn_digits

SMALL = dict(num_variables=60, knowledge_images=300, patch_width=2, fraction_q=0.1, fraction_qd1consis=0.2, fraction_qd2incons=0.2)
ROWS = {name: slice(start, start + n) for name, start, n in zip(
    STRIP_ROWS, np.cumsum([0, *STRIP_ROWS.values()])[:-1], STRIP_ROWS.values())}


@pytest.fixture(scope="module")
def task() -> DigitsQATask:
    return DigitsQATask(**SMALL)


@pytest.fixture(scope="module")
def corpus(task):
    return task.build(seed=5)


def _strip(task, row, name) -> np.ndarray:
    return task.render(row["prompt"])[ROWS[name]]


def test_images_are_deterministic_per_seed_and_round_trip(task, corpus):
    assert corpus_fingerprint(task.build(seed=5)) == corpus_fingerprint(corpus)
    assert corpus_fingerprint(task.build(seed=6)) != corpus_fingerprint(corpus)
    image = task.image(tag=np.ones((2, 8), dtype=np.int64), content=sklearn_digits()[0][7])
    assert (task.render(task.prompt(tag=np.ones((2, 8), dtype=np.int64), content=sklearn_digits()[0][7])) == image).all()
    assert task.render(corpus["train"][0]["prompt"]).shape == (14, 8)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_every_patch_width_round_trips(width):
    task = DigitsQATask(**{**SMALL, "patch_width": width})
    image = task.image(variable=np.eye(2, 8, dtype=np.int64), content=sklearn_digits()[0][3])
    assert len(task.tokens(image)) == 14 * 8 // (2 * width)
    assert (task.render(task.prompt(variable=np.eye(2, 8, dtype=np.int64), content=sklearn_digits()[0][3])) == image).all()


def test_strips_per_row_kind_and_tags_per_subset(task, corpus):
    patterns = task.patterns(__import__("random").Random(5))
    tags = {tag.tobytes(): i + 1 for i, tag in enumerate(patterns["tags"])}
    questions = [q.tobytes() for q in patterns["questions"]]
    for split in corpus.values():
        for row in split:
            blank = {name: not _strip(task, row, name).any() for name in STRIP_ROWS}
            if row["kind"] == "definition":
                tag, _ = DEFINED[row["subset"]]
                assert tags[_strip(task, row, "tag").tobytes()] == tag and blank["question"]
                assert " ".join(task.tokens(_strip(task, row, "variable"))) == row["key"]
            elif row["subset"] == "knowledge":
                assert blank["tag"] and blank["variable"] and not blank["content"]
                assert _strip(task, row, "question").tobytes() in questions
            else:
                assert blank["tag"] and blank["content"] and not blank["variable"]
                assert _strip(task, row, "question").tobytes() in questions


def test_definitions_give_every_target_and_only_tag_2_contradicts(task, corpus):
    patterns = task.patterns(__import__("random").Random(5))
    questions = {q.tobytes(): k for k, q in enumerate(patterns["questions"])}
    answers = defaultdict(dict)  # variable -> target index -> answer of its questions
    for split in corpus.values():
        for row in split:
            if row["kind"] == "question" and row["key"]:
                answers[row["key"]][questions[_strip(task, row, "question").tobytes()]] = row["answer"]
    images, classes = sklearn_digits()
    levels = {quantise(image, task.grey_levels).tobytes(): c for image, c in zip(images, classes)}
    for row in corpus["train"]:
        if row["kind"] != "definition":
            continue
        given = row["answer"].split()
        assert len(given) == task.num_targets
        asked = [answers[row["key"]][k] for k in range(task.num_targets)]
        shown = levels.get(_strip(task, row, "content").tobytes())
        assert shown is not None  # the content strip is a digit of the pool
        if DEFINED[row["subset"]][1]:
            assert given == asked
        else:  # qd2incons shows a digit of another class, whose targets differ somewhere
            assert given != asked and shown != int(row["referent"])


def test_held_out_questions(task, corpus):
    trained = defaultdict(int)
    held = defaultdict(int)
    subset_of = {}
    for split, counts in (("train", trained), ("test", held)):
        for row in corpus[split]:
            if row["kind"] == "question" and row["key"]:
                counts[row["key"]] += 1
                subset_of[row["key"]] = row["subset"]
    for key, subset in subset_of.items():
        if subset in ("d1consis", "d2consis", "no_qd_baseline"):
            assert trained[key] == 0 and held[key] == task.num_targets
        else:
            assert held[key] == task.held_out_targets and trained[key] == task.num_targets - task.held_out_targets
    assert not set(corpus["train"]["text"]) & set(corpus["test"]["text"])


def test_mnist_is_pooled_to_8x8_and_offline_is_a_clear_error(monkeypatch):
    image = np.zeros((28, 28), dtype=np.uint8)
    image[2:5, 2:5] = 255  # the top-left 3 x 3 block of the centre crop
    pooled = digits_qa.pool_mnist(image)
    assert pooled.shape == (8, 8) and pooled[0, 0] == 16 and pooled.sum() == 16

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(ValueError, match="task.source=sklearn"):
        DigitsQATask(source="mnist", **SMALL).build(seed=0)


@pytest.mark.parametrize("change, message", [
    ({"held_out_targets": 4}, "held_out_targets=4 must be below"),
    ({"source": "cifar"}, "task.source"),
    ({"target_values": 2, "num_targets": 3}, "at least 10"),
    ({"num_variables": 1790}, "needs more digit images"),
    ({"grey_levels": 17, "patch_width": 8}, "beyond 64 bits"),
])
def test_bad_arguments_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        DigitsQATask(**{**SMALL, **change}).build(seed=0)


def test_a_run_with_gradient_alignment_trains_and_scores_every_subset(tmp_path, monkeypatch):
    """A tiny three-stage run through the same Trainer, exact match and gradient alignment."""
    import json
    import sys

    import yaml

    from iml_hf import train

    recipe = {
        "output_dir": str(tmp_path / "run"), "seed": 0, "torch_threads": 1,
        "task": {"name": "digits_qa", **SMALL},
        "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
        "training": {"per_device_train_batch_size": 16, "learning_rate": 3e-3, "disable_tqdm": True},
        "evaluation": {"eval_steps": 0},
        "gradient_alignment": {"enabled": True, "aliases_per_subset": 2, "questions_per_alias": 2},
        "stages": [{"name": "knowledge", "train_subsets": ["knowledge"], "max_steps": 3},
                   {"name": "stage1", "train_subsets": ["qd1consis", "qd2incons", "q"], "max_steps": 3},
                   {"name": "stage2", "train_subsets": ["d1consis", "d2consis"], "train_kinds": ["definition"],
                    "max_steps": 3}],
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tmp_path / "r.yaml")])
    results = train.main()
    assert set(results["final_em"]) >= {"knowledge", "qd1consis", "qd2incons", "d1consis", "d2consis", "no_qd_baseline"}
    assert results["stages"]["stage2"]["n"]["d1consis"] == 4 * 9  # 9 variables x every target held out
    assert {"qd1consis", "d1consis", "d2consis"} <= set(results["stages"]["stage2"]["grad_align"]["pairs"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["contrasts"] == results["contrasts"]


def test_probe_labels_of_the_corpus(corpus):
    """The probes read each variable's tag and every target of its digit off this corpus."""
    from iml_hf.analyze.probes import build_probe_set

    probes = build_probe_set(corpus)
    definitions = {r["key"]: r for r in corpus["train"] if r["kind"] == "definition"}
    assert set(probes.variables) == set(definitions)
    assert len(probes.relations) == 4  # one attribute per target, asked of every variable
    for i, variable in enumerate(probes.variables):
        assert probes.labels["tag"][i] == str(DEFINED[definitions[variable]["subset"]][0])
        answers = sorted(probes.labels[target][i] for target in probes.relations)
        if DEFINED[definitions[variable]["subset"]][1]:
            assert answers == sorted(definitions[variable]["answer"].split())
