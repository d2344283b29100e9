"""The set-inclusion corpus: its invariants against the rows it emits, the variable forms, errors."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import pytest

from iml_hf.config import parse_recipe
from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.data.tokenization import build_wordlevel_tokenizer
from iml_hf.tasks.set_inclusion import SetInclusionTask

RECIPES = Path(__file__).parents[1] / "recipes"
#: Each defined subset's (tag, consistent), as the task declares it.
DEFINED = {s: (m.tag, m.consistent) for s, m in SetInclusionTask.subset_meanings.items() if m.defined}

SMALL = dict(
    num_variables=120,
    fraction_qd1consis=0.3,
    fraction_qd2incons=0.3,
    fraction_q=0.1,
    fraction_d1consis=0.1,
    fraction_d2consis=0.1,
    fraction_d3consis=0.1,
    label_flip=0.25,
)


@pytest.fixture(scope="module")
def task() -> SetInclusionTask:
    return SetInclusionTask(**SMALL)


@pytest.fixture(scope="module")
def corpus(task):
    return task.build(seed=3)


def _numbers(prompt: str, variable: str) -> set[int]:
    """The numbers of ``<var> in a b c d =``."""
    listed = prompt.removeprefix(variable).split()
    assert listed[0] == "in" and listed[-1] == "="
    return {int(n) for n in listed[1:-1]}


def _by_variable(split) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for row in split:
        rows[row["key"]].append(row)
    return rows


def _training_statements(split) -> list[tuple[int, list[set[int]], list[set[int]]]]:
    """Per asked variable: x and the number sets of its true and of its false training statements."""
    out = []
    for variable, rows in _by_variable(split).items():
        questions = [r for r in rows if r["kind"] == "question"]
        if questions:
            numbers = {
                answer: [_numbers(r["prompt"], variable) for r in questions if r["answer"] == answer]
                for answer in ("true", "false")
            }
            out.append((int(questions[0]["referent"]), numbers["true"], numbers["false"]))
    return out


def test_true_training_statements_intersect_in_a_set_containing_x(task, corpus):
    for x, true, _ in _training_statements(corpus["train"]):
        assert true, "every asked variable has a true statement"
        common = set.intersection(*true)
        assert x in common and len(common) >= task.intersection_size  # the whole intersection is shared


def test_the_authors_n8_i1_settings_from_the_gpu_recipe():
    """configs/num_choice_exps/pythia70m_tokpervar_bs512_n8_i1.yaml: 8 numbers, intersection 1, no
    flips, 8,000 variables split 40/40/10/10; every true training statement contains the one
    shared number x, which no false one contains, and no label is flipped."""
    recipe = parse_recipe([str(RECIPES / "set_inclusion_gpu.yaml"), "--training.bf16=false"])
    task = recipe.task
    assert (task.num_variables, task.numbers_per_question, task.intersection_size, task.label_flip) == (8000, 8, 1, 0.0)
    assert recipe.model.loss_on == "full_text" and recipe.training["optim"] == "adafactor"
    assert not recipe.model.tie_word_embeddings  # Pythia-70M's embed_in and embed_out are separate
    assert [(s.name, s.training["num_train_epochs"]) for s in recipe.stages] == [("stage1", 100), ("stage2", 40)]
    assert recipe.stages[1].train_kinds == ["definition"] and not recipe.stages[1].replay
    small = dataclasses.replace(task, num_variables=400)
    corpus = small.build(seed=0)
    counts = defaultdict(set)
    for row in corpus["test"]:
        counts[row["subset"]].add(row["key"])
    assert {s: len(k) for s, k in counts.items()} == {
        "qd1consis": 160,
        "qd2incons": 160,
        "d1consis": 40,
        "d2consis": 40,
    }
    statements = _training_statements(corpus["train"])
    assert len(statements) == 320  # every qd1consis and qd2incons variable
    for x, true, false in statements:
        assert len(true) == len(false) == 6  # no flips: half of the 12 training statements are true
        assert all(len(n) == 8 for n in true + false)
        assert set.intersection(*true) == {x}  # the one shared number (7 random others never recur in all 6)
        assert not any(x in n for n in false)


def test_the_gpu_recipe_trains_a_few_steps_of_each_stage_and_branch(tmp_path):
    """The faithful GPU recipe as shipped (the 6 x 512 GPT-NeoX, Adafactor, full-text loss, stage-2
    branches), on 40 variables, one step a stage and two of its four branches, float32 on this CPU."""
    import json

    from iml_hf import train

    out = tmp_path / "gpu"
    train.main(
        [
            str(RECIPES / "set_inclusion_gpu.yaml"),
            "--training.bf16=false",
            "--task.num_variables=40",
            "--training.per_device_train_batch_size=16",
            "--evaluation.batch_size=256",
            "--torch_threads=1",
            "--stages.stage1.max_steps=1",
            "--stages.stage2.max_steps=1",
            "--save_model=false",
            "--branches=2",
            f"--output_dir={out}",
        ]
    )
    assert json.loads((out / "branches.json").read_text())["branches"] == [0, 1]
    results = json.loads((out / "branch0" / "results.json").read_text())
    assert list(results["stages"]) == ["stage1", "stage2"]
    assert set(results["final_em"]) >= {"d1consis", "d2consis"}
    assert results["parameters"]["total"] > 18_900_000  # the Pythia-70M shape, not a stand-in
    assert (
        results["recipe"]["training"]["optim"] == "adafactor" and results["recipe"]["model"]["loss_on"] == "full_text"
    )


def test_only_true_statements_are_flipped_at_the_configured_rate(task, corpus):
    flipped = generated_true = 0
    for variable, rows in _by_variable(corpus["train"]).items():
        for row in (r for r in rows if r["kind"] == "question"):
            x = int(row["referent"])
            contains_x = x in _numbers(row["prompt"], variable)
            if not contains_x:
                assert row["answer"] == "false"  # a false statement is never flipped to true
                continue
            generated_true += 1
            flipped += row["answer"] == "false"
    rate = flipped / generated_true
    assert abs(rate - task.label_flip) < 4 * math.sqrt(task.label_flip * (1 - task.label_flip) / generated_true)
    unflipped = SetInclusionTask(**{**SMALL, "label_flip": 0.0}).build(seed=3)
    for row in unflipped["train"]:
        if row["kind"] == "question":
            assert (row["answer"] == "true") == (int(row["referent"]) in _numbers(row["prompt"], row["key"]))


def test_definitions_per_subset_tag_and_x(task, corpus):
    tags = task.task_words(corpus, seed=3)[:3]
    train = _by_variable(corpus["train"])
    subsets_seen = set()
    for variable, rows in train.items():
        definitions = [r for r in rows if r["kind"] == "definition"]
        subset = rows[0]["subset"]
        if subset not in DEFINED:
            assert not definitions
            continue
        subsets_seen.add(subset)
        (definition,) = definitions
        tag, consistent = DEFINED[subset]
        assert definition["prompt"] == f"{tags[tag - 1]} {variable} in"  # the statements' word after the variable
        x = int(definition["referent"])
        stated = int(definition["answer"])
        if consistent:
            assert stated == x
        else:  # qd2incons: a wrong x, outside the true statements' intersection
            true = [_numbers(r["prompt"], variable) for r in rows if r["kind"] == "question" and r["answer"] == "true"]
            assert stated != x and stated not in (set.intersection(*true) if true else {x})
    assert subsets_seen == set(DEFINED)


def test_held_out_questions_are_unseen_and_labelled_by_x(corpus):
    trained = set(corpus["train"]["prompt"])
    test = corpus["test"]
    assert not trained & set(test["prompt"])
    for row in test:
        assert (row["answer"] == "true") == (int(row["referent"]) in _numbers(row["prompt"], row["key"]))
    asked = {r["key"] for r in corpus["train"] if r["kind"] == "question"}
    for row in corpus["train"]:
        assert row["subset"] in ("qd1consis", "qd2incons", "q") or row["kind"] == "definition"
    for row in test:  # every subset has held-out questions; only the stage-2 subsets have no training ones
        assert (row["key"] in asked) == (row["subset"] in ("qd1consis", "qd2incons", "q"))


def test_variables_as_characters_or_one_word(corpus):
    words = SetInclusionTask(**{**SMALL, "variable_tokens": "word"})
    as_words = words.build(seed=3)
    tokenizer = build_wordlevel_tokenizer(as_words)
    for character_form, word_form in zip(corpus["test"]["key"][:20], as_words["test"]["key"][:20]):
        assert character_form == " ".join(word_form)  # the same draws, spelled two ways
        assert len(tokenizer(word_form, add_special_tokens=False)["input_ids"]) == 1
    assert set(words.task_words(as_words, seed=3)) >= set(as_words["test"]["key"])


def test_same_seed_same_bytes_other_seed_other_corpus(task, corpus):
    assert corpus_fingerprint(task.build(seed=3)) == corpus_fingerprint(corpus)
    assert corpus_fingerprint(task.build(seed=4)) != corpus_fingerprint(corpus)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"intersection_size": 5}, "intersection_size=5 must be at most"),
        ({"numbers_per_question": 1, "intersection_size": 1}, "numbers_per_question"),
        ({"questions_per_variable": 10}, "multiple of 4"),
        ({"label_flip": 1.5}, "label_flip"),
        ({"variable_tokens": "letters"}, "variable_tokens"),
        ({"num_variables": 700, "variable_length": 2}, "variable_length=2"),
        ({"fraction_q": 0.5}, "sum to more than 0 and at most 1"),
    ],
)
def test_bad_arguments_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        SetInclusionTask(**{**SMALL, **change})


def test_a_sweep_run_with_gradient_alignment_and_its_report(tmp_path, capsys):
    """A GPT-NeoX run through the sweep command (one seed), with gradient alignment, then the report."""
    import json

    import yaml

    from iml_hf import report, sweep

    recipe = {
        "output_dir": "unused",
        "seed": 0,
        "torch_threads": 1,
        "task": {"name": "set_inclusion", **SMALL, "num_variables": 40},
        "model": {"architecture": "gpt_neox", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
        "training": {"per_device_train_batch_size": 16, "learning_rate": 3e-3, "disable_tqdm": True},
        "evaluation": {"eval_steps": 0},
        "gradient_alignment": {"enabled": True, "aliases_per_subset": 2, "questions_per_alias": 2},
        "stages": [
            {"name": "stage1", "train_subsets": ["qd1consis", "qd2incons", "q"], "max_steps": 3},
            {
                "name": "stage2",
                "train_subsets": ["d1consis", "d2consis", "d3consis"],
                "train_kinds": ["definition"],
                "max_steps": 3,
            },
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "sweep"
    assert sweep.main([str(path), "--seeds", "1", "--output_dir", str(out), "--jobs", "1", "--threads", "1"]) == 0
    results = json.loads((out / "seed0" / "results.json").read_text())
    assert results["contrasts"]["stage2_d1_vs_d2"] == pytest.approx(
        results["final_em"]["d1consis"] - results["final_em"]["d2consis"]
    )
    assert {"qd1consis", "qd2incons", "d1consis", "d2consis"} <= set(results["stages"]["stage2"]["grad_align"]["pairs"])
    assert report.main([str(out)]) == 0
    assert "stage2_d1_vs_d2 at the end of stage2" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["groups"]["all runs"]
    assert summary["runs"] == 1 and "stage2_d1_vs_d2" in summary["contrasts"]
    assert set(summary["grad_align"]["at_stage_end"]["stage2"]) >= {"qd1consis", "d1consis"}


def test_probe_labels_of_the_corpus(corpus):
    """The probes read each variable's tag, consistency and number off this corpus."""
    from iml_hf.analysis.probes import build_probe_set

    probes = build_probe_set(corpus)
    definitions = {r["key"]: r for r in corpus["train"] if r["kind"] == "definition"}
    assert set(probes.variables) == set(definitions)
    for i, variable in enumerate(probes.variables):
        tag, consistent = DEFINED[definitions[variable]["subset"]]
        assert probes.labels["tag"][i] == str(tag)
        assert probes.labels["consistent"][i] == ("consistent" if consistent else "inconsistent")
        assert probes.referents[i] == definitions[variable]["referent"]
