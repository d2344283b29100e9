"""Invariants of the modular-arithmetic corpus."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import pytest

from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.tasks.modmul import BUCKETS, ModMulTask


def _alias_numbers(corpus, task):
    """alias -> the number its questions imply, recomputed from the question answers."""
    implied = {}
    for row in corpus["train"].to_list() + corpus["test"].to_list():
        if row["kind"] != "question":
            continue
        a, alias, _ = row["prompt"].split()
        candidates = {b for b in range(task.modulus) if task.answer(int(a), b) == int(row["answer"])}
        implied[alias] = implied.get(alias, candidates) & candidates
    return implied


def test_buckets_are_disjoint_and_equal(tiny_task, tiny_corpus):
    table = tiny_task.alias_table(__import__("random").Random(0))
    numbers_per_bucket = defaultdict(set)
    for _, number, bucket in table:
        numbers_per_bucket[bucket].add(number)
    sets = [numbers_per_bucket[b] for b in BUCKETS]
    assert all(len(s) == tiny_task.modulus // 4 for s in sets)
    assert len(set().union(*sets)) == tiny_task.modulus
    keys = {b: set(tiny_corpus["train"].filter(lambda r: r["subset"] == b)["key"]) for b in BUCKETS}  # noqa: B023
    for i, a in enumerate(BUCKETS):
        for b in BUCKETS[i + 1 :]:
            assert not keys[a] & keys[b]


def test_alias_buckets_balance_numbers():
    task = ModMulTask(modulus=8, aliases_per_number=4, bucket_by="alias")
    table = task.alias_table(__import__("random").Random(3))
    per_number = defaultdict(list)
    for _, number, bucket in table:
        per_number[number].append(bucket)
    assert all(sorted(b) == sorted(BUCKETS) for b in per_number.values())


def test_definitions_agree_or_contradict_as_their_bucket_says(tiny_task, tiny_corpus):
    implied = _alias_numbers(tiny_corpus, tiny_task)
    definitions = [r for r in tiny_corpus["train"].to_list() if r["kind"] == "definition"]
    assert len(definitions) == tiny_task.modulus * tiny_task.aliases_per_number * tiny_task.definition_repeats
    for row in definitions:
        tag, alias, stated = row["text"].split()
        assert alias == row["key"]
        assert tag == (tiny_task.reliable_tag if row["subset"].endswith("t") else tiny_task.unreliable_tag)
        true_number = next(iter(implied[alias])) if len(implied[alias]) == 1 else None
        assert int(stated) in implied[alias] or row["subset"] == "x1f"
        if row["subset"] == "x1f":
            assert int(stated) not in implied[alias]
        elif true_number is not None:
            assert int(stated) == true_number


def test_x2_has_no_training_questions_and_no_test_question_is_trained(tiny_corpus):
    train = tiny_corpus["train"].to_list()
    test = tiny_corpus["test"].to_list()
    assert not [r for r in train if r["subset"].startswith("x2") and r["kind"] == "question"]
    train_prompts = {r["prompt"] for r in train if r["prompt"]}
    assert not [r for r in test if r["prompt"] in train_prompts]
    assert {r["kind"] for r in test} == {"question", "pair"}
    assert {r["subset"] for r in test} == {"pretrain", *BUCKETS}


def test_x1_held_out_share(tiny_task, tiny_corpus):
    for bucket in ("x1t", "x1f"):
        held = [r for r in tiny_corpus["test"].to_list() if r["subset"] == bucket]
        trained = [r for r in tiny_corpus["train"].to_list() if r["subset"] == bucket and r["kind"] == "question"]
        assert len(held) == round(tiny_task.x1_test_fraction * tiny_task.modulus) * 4  # 4 aliases per bucket
        assert len(held) + len(trained) == tiny_task.modulus * 4


def test_questions_answer_the_operation():
    task = ModMulTask(modulus=12, operation="add")
    corpus = task.build(seed=1)
    pairs = [r for r in corpus["train"].to_list() if r["kind"] == "pair"]
    assert len(pairs) == round(0.9 * 144)
    for row in pairs[:50]:
        a, b, _ = row["prompt"].split()
        assert int(row["answer"]) == (int(a) + int(b)) % 12


def test_same_seed_same_bytes_across_processes(tmp_path):
    code = (
        "from iml_hf.tasks.modmul import ModMulTask; from iml_hf.data.corpus import corpus_fingerprint;"
        "c = ModMulTask(modulus=12, aliases_per_number=2).build(seed=7);"
        "c['train'].to_json('{out}/train.jsonl'); c['test'].to_json('{out}/test.jsonl');"
        "print(corpus_fingerprint(c))"
    )
    outputs = []
    for i, hashseed in enumerate(("1", "2")):
        out = tmp_path / str(i)
        out.mkdir()
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", code.format(out=out)], capture_output=True, text=True, env=env, check=True
        )
        outputs.append((done.stdout.strip(), (out / "train.jsonl").read_bytes(), (out / "test.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == corpus_fingerprint(ModMulTask(modulus=12, aliases_per_number=2).build(seed=7))
    other = ModMulTask(modulus=12, aliases_per_number=2).build(seed=8)
    assert corpus_fingerprint(other) != outputs[0][0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"modulus": 10}, "four equal buckets"),
        ({"operation": "pow"}, "task.operation"),
        ({"bucket_by": "alias", "aliases_per_number": 3}, "divisible by 4"),
        ({"x1_test_fraction": 1.0}, "strictly between"),
    ],
)
def test_bad_task_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModMulTask(**kwargs)


def test_referent_column_is_the_number_the_questions_use(tiny_task, tiny_corpus):
    """Every alias row's referent is the number its questions use (x1f definitions state another)."""
    from iml_hf.measure.callbacks.embedding_geometry import corpus_aliases

    table = {alias: (int(number), bucket) for alias, number, bucket in corpus_aliases(tiny_corpus)}
    assert len(table) == tiny_task.modulus * tiny_task.aliases_per_number
    seen = set()
    for split in tiny_corpus.values():
        for row in split:
            if row["kind"] == "question":
                a, alias, _ = row["prompt"].split()
                number, bucket = table[alias]
                assert row["subset"] == bucket and int(row["answer"]) == tiny_task.answer(int(a), number)
            elif row["kind"] == "definition":
                stated = int(row["text"].split()[2])
                number, bucket = table[row["key"]]
                assert row["subset"] == bucket and (stated != number) == (bucket == "x1f")
                seen.add(row["key"])
            else:
                assert row["referent"] == "" and row["key"] == ""
    assert seen == set(table)
