"""The digits QA corpus: images per seed, strips per row kind, targets, held-out questions, MNIST pooling."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.tasks import digits_qa
from iml_hf.tasks.digits_qa import STRIP_ROWS, DigitsQATask, quantise, sklearn_digits

#: Each defined subset's (tag, consistent), as the task declares it.
DEFINED = {s: (m.tag, m.consistent) for s, m in DigitsQATask.subset_meanings.items() if m.defined}

SMALL = dict(
    num_variables=60,
    knowledge_images=300,
    patch_width=2,
    fraction_q=0.1,
    fraction_qd1consis=0.2,
    fraction_qd2incons=0.2,
)
ROWS = {
    name: slice(start, start + n)
    for name, start, n in zip(STRIP_ROWS, np.cumsum([0, *STRIP_ROWS.values()])[:-1], STRIP_ROWS.values())
}


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
    assert (
        task.render(task.prompt(tag=np.ones((2, 8), dtype=np.int64), content=sklearn_digits()[0][7])) == image
    ).all()
    assert task.render(corpus["train"][0]["prompt"]).shape == (14, 8)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_every_patch_width_round_trips(width):
    task = DigitsQATask(**{**SMALL, "patch_width": width})
    image = task.image(variable=np.eye(2, 8, dtype=np.int64), content=sklearn_digits()[0][3])
    assert len(task.tokens(image)) == 14 * 8 // (2 * width)
    assert (
        task.render(task.prompt(variable=np.eye(2, 8, dtype=np.int64), content=sklearn_digits()[0][3])) == image
    ).all()


def _table(task, seed):
    rng = __import__("random").Random(seed)
    patterns = task.patterns(rng)
    return patterns, task.target_table(rng)


def test_strips_per_row_kind_and_tags_per_subset(task, corpus):
    patterns, _ = _table(task, 5)
    tags = {tag.tobytes(): i + 1 for i, tag in enumerate(patterns["tags"])}
    questions = [q.tobytes() for q in patterns["questions"]]
    for split in corpus.values():
        for row in split:
            blank = {name: not _strip(task, row, name).any() for name in STRIP_ROWS}
            if row["kind"] == "definition":
                tag, _ = DEFINED[row["subset"]]
                assert tags[_strip(task, row, "tag").tobytes()] == tag and blank["question"] and blank["content"]
                assert " ".join(task.tokens(_strip(task, row, "variable"))) == row["key"]
            elif row["subset"] == "knowledge" and " c" in row["prompt"]:  # class token -> target
                assert blank["tag"] and blank["variable"] and blank["content"]
                assert _strip(task, row, "question").tobytes() in questions
            elif row["subset"] == "knowledge":
                assert blank["tag"] and blank["variable"] and not blank["content"]
                assert _strip(task, row, "question").tobytes() in questions
            else:
                assert blank["tag"] and blank["content"] and not blank["variable"]
                assert _strip(task, row, "question").tobytes() in questions


def test_definition_layout_the_class_token_precedes_every_pixel_it_could_be_read_from():
    """A definition is ``tag variable <blank> = c<class> <digit>``: its prompt holds no digit pixel,
    and the class token is the first token after ``=``, before the digit's content tokens."""
    task = DigitsQATask(**{**SMALL, "definition_digit": True})
    corpus = task.build(seed=5)
    images, classes = sklearn_digits()
    levels = defaultdict(set)
    for image, c in zip(images, classes):
        levels[quantise(image, task.grey_levels).tobytes()].add(int(c))
    per_strip = 8 // task.patch_width
    definitions = [row for row in corpus["train"] if row["kind"] == "definition"]
    assert definitions
    for row in definitions:
        prompt = row["prompt"].split()
        assert prompt[-1] == "=" and all(t.startswith("p") for t in prompt[:-1])
        assert set(prompt[2 * per_strip : -1]) == {"p0"}  # question and content strips blank
        answer = row["answer"].split()
        assert answer[0] == f"c{answer[0][1:]}" and answer[0][1:].isdigit()
        content = answer[1:]
        assert len(content) == 4 * per_strip and all(t.startswith("p") for t in content)
        shown = task.render(" ".join(["p0"] * 3 * per_strip + content))[6:]
        assert int(answer[0][1:]) in levels[shown.tobytes()]  # the digit shown is of the named class
        assert row["text"] == f"{row['prompt']} {row['answer']}"
    plain = DigitsQATask(**SMALL).build(seed=5)  # the default: the class token alone
    assert all(
        r["answer"] == r["answer"].split()[0] and r["answer"].startswith("c") and r["prompt"].split()[-1] == "="
        for r in plain["train"]
        if r["kind"] == "definition"
    )


def test_definitions_name_the_class_and_only_tag_2_contradicts(task, corpus):
    _, table = _table(task, 5)
    for row in corpus["train"]:
        if row["kind"] != "definition":
            continue
        named = int(row["answer"].split()[0][1:])
        if DEFINED[row["subset"]][1]:
            assert named == int(row["referent"])
        else:  # qd2incons names another class, whose targets differ somewhere
            assert named != int(row["referent"])
            assert [t[named] for t in table] != [t[int(row["referent"])] for t in table]


def test_questions_answer_the_class_targets_which_class_questions_teach(task, corpus):
    patterns, table = _table(task, 5)
    questions = {q.tobytes(): k for k, q in enumerate(patterns["questions"])}
    taught = {}
    for split in corpus.values():
        for row in split:
            if row["kind"] != "question":
                continue
            k = questions[_strip(task, row, "question").tobytes()]
            assert row["answer"] == f"v{table[k][int(row['referent'])]}"
            if row["subset"] == "knowledge" and " c" in row["prompt"]:
                [token] = [t for t in row["prompt"].split() if t.startswith("c")]
                assert token == f"c{row['referent']}"
                taught[(int(token[1:]), k)] = row["answer"]
    assert len(taught) == 10 * task.num_targets  # every class x target, in training
    assert all(r["subset"] != "knowledge" or " c" not in r["prompt"] for r in corpus["test"])


@pytest.mark.parametrize("seed", [0, 5, 100])
@pytest.mark.parametrize("change", [{}, {"num_targets": 6, "held_out_targets": 2}, {"target_values": 3}])
def test_held_out_answers_are_not_a_function_of_the_trained_ones(seed, change):
    """For every asked variable, some class agrees with its class on every trained answer and
    differs on each held-out one: the target table alone cannot give a held-out answer."""
    task = DigitsQATask(**{**SMALL, **change})
    corpus = task.build(seed=seed)
    patterns, table = _table(task, seed)
    questions = {q.tobytes(): k for k, q in enumerate(patterns["questions"])}
    answers = defaultdict(lambda: defaultdict(dict))  # key -> split -> target -> answer value
    subset_of = {}
    for split in corpus:
        for row in corpus[split]:
            if row["kind"] == "question" and row["key"]:
                k = questions[_strip(task, row, "question").tobytes()]
                answers[row["key"]][split][k] = int(row["answer"][1:])
                subset_of[row["key"]] = row["subset"]
    asked = [key for key, s in subset_of.items() if s in ("qd1consis", "qd2incons", "q")]
    assert asked
    for key in asked:
        trained, held = answers[key]["train"], answers[key]["test"]
        assert len(held) == task.held_out_targets
        consistent = [c for c in range(10) if all(table[k][c] == v for k, v in trained.items())]
        for k in held:
            assert len({table[k][c] for c in consistent}) > 1, (key, trained, held)


def test_the_target_table_pairs_twins_and_keeps_the_answer_prior_low():
    task = DigitsQATask(**SMALL)
    for seed in range(20):
        _, table = _table(task, seed)
        columns = list(zip(*table))
        assert len(set(columns)) == 10
        for c in range(10):
            assert task.valid_held_out(table, c)
        for row in table:  # five targets, one held out: every answer value is of at most three classes
            assert max(row.count(v) for v in set(row)) <= 3


@pytest.mark.parametrize("change", [{}, {"num_targets": 4}, {"num_targets": 6, "held_out_targets": 2}])
def test_every_held_out_answer_is_an_answer_the_same_question_trains(change):
    """A held-out answer is never a value that trained questions about variables never give for that
    target (a model would learn to avoid it): some class that never holds the target out has it."""
    task = DigitsQATask(**{**SMALL, **change})
    for seed in range(20):
        _, table = _table(task, seed)
        held = {c: {k for ks in task.valid_held_out(table, c) for k in ks} for c in range(10)}
        for c in range(10):
            for k in held[c]:
                assert any(table[k][other] == table[k][c] and k not in held[other] for other in range(10))


def test_the_q_baseline_has_a_share_by_default():
    task = DigitsQATask()
    assert task.fraction_q > 0 and task.definition_baselines["qd1consis"] == "q"
    assert task.definition_baselines["d1consis"] == "no_qd_baseline"
    assert task.version == 2


def test_the_recipe_has_a_q_baseline_and_a_thousand_questions_per_d_subset():
    import yaml

    recipe = yaml.safe_load(open(__import__("pathlib").Path(__file__).parents[1] / "recipes" / "digits_qa_cpu.yaml"))
    task = DigitsQATask(**{k: v for k, v in recipe["task"].items() if k != "name"})
    assert task.fraction_q > 0
    assert round(task.num_variables * task.fraction_d1consis) * task.num_targets >= 1000
    assert recipe["evaluation"]["max_examples_per_subset"] >= 1000
    assert "q" in recipe["stages"][1]["train_subsets"]


def test_held_out_questions(task, corpus):
    trained = defaultdict(int)
    held = defaultdict(int)
    subset_of = {}
    for split, counts in (("train", trained), ("test", held)):
        for row in corpus[split]:
            if row["kind"] == "question" and row["key"]:
                counts[row["key"]] += 1
                subset_of[row["key"]] = row["subset"]
    assert set(subset_of.values()) == {"qd1consis", "qd2incons", "q", "d1consis", "d2consis", "no_qd_baseline"}
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"held_out_targets": 5}, "held_out_targets=5 must be below"),
        ({"source": "cifar"}, "task.source"),
        ({"target_values": 2, "num_targets": 3}, "at least 5"),
        ({"num_variables": 70000}, "exceeds the distinct variable patterns"),
        ({"grey_levels": 17, "patch_width": 8}, "beyond 64 bits"),
    ],
)
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
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "torch_threads": 1,
        "task": {"name": "digits_qa", **SMALL},
        "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
        "training": {"per_device_train_batch_size": 16, "learning_rate": 3e-3, "disable_tqdm": True},
        "evaluation": {"eval_steps": 0},
        "gradient_alignment": {"enabled": True, "aliases_per_subset": 2, "questions_per_alias": 2},
        "stages": [
            {"name": "knowledge", "train_subsets": ["knowledge"], "max_steps": 3},
            {"name": "stage1", "train_subsets": ["qd1consis", "qd2incons", "q"], "max_steps": 3},
            {
                "name": "stage2",
                "train_subsets": ["d1consis", "d2consis"],
                "train_kinds": ["definition"],
                "max_steps": 3,
            },
        ],
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tmp_path / "r.yaml")])
    results = train.main()
    assert set(results["final_em"]) >= {"knowledge", "qd1consis", "qd2incons", "d1consis", "d2consis", "no_qd_baseline"}
    assert results["stages"]["stage2"]["n"]["d1consis"] == 5 * 12  # 12 variables x every target held out
    assert {"qd1consis", "d1consis", "d2consis"} <= set(results["stages"]["stage2"]["grad_align"]["pairs"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["contrasts"] == results["contrasts"]


def test_probe_labels_of_the_corpus(corpus):
    """The probes read each variable's tag and every target of its digit off this corpus."""
    from iml_hf.analysis.probes import build_probe_set

    probes = build_probe_set(corpus)
    definitions = {r["key"]: r for r in corpus["train"] if r["kind"] == "definition"}
    assert set(probes.variables) == set(definitions)
    assert len(probes.relations) == 5  # one attribute per target, asked of every variable
    _, table = _table(DigitsQATask(**SMALL), 5)
    for i, variable in enumerate(probes.variables):
        assert probes.labels["tag"][i] == str(DEFINED[definitions[variable]["subset"]][0])
        answers = sorted(probes.labels[target][i] for target in probes.relations)
        referent = int(definitions[variable]["referent"])
        assert answers == sorted(f"v{row[referent]}" for row in table)
