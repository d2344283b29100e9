"""Branch re-splits (``iml_hf.tasks.resplit``) on the corpora of the tasks that branch.

Invariants a branched design rests on: rows an earlier stage trains on are byte-identical across
branches; only keys unseen before the branch stage move; a counterbalanced pair exchanges its
halves key for key; subset sizes stay; the same seed and branch give the same corpus in any process.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.tasks.digits_qa import DigitsQATask
from iml_hf.tasks.entities import EntitiesTask
from iml_hf.tasks.modmul import ModMulTask
from iml_hf.tasks.resplit import resplit
from iml_hf.tasks.set_inclusion import SetInclusionTask

TASKS = {
    "entities": lambda branch: EntitiesTask(
        num_entities=120, fraction_d3consis=0.05, fraction_no_qd_baseline=0.05, branch=branch
    ),
    "modmul_alias": lambda branch: ModMulTask(modulus=12, aliases_per_number=4, bucket_by="alias", branch=branch),
    "modmul_number": lambda branch: ModMulTask(modulus=16, aliases_per_number=2, branch=branch),
    "set_inclusion": lambda branch: SetInclusionTask(num_variables=80, questions_per_variable=8, branch=branch),
    "digits_qa": lambda branch: DigitsQATask(num_variables=80, knowledge_images=40, branch=branch),
}
SEED = 5


def _keys(corpus, subset: str) -> set[str]:
    return {k for split in corpus.values() for k, s in zip(split["key"], split["subset"]) if s == subset}


@pytest.fixture(scope="module", params=list(TASKS))
def built(request):
    make = TASKS[request.param]
    return make(None), {b: make(b).build(SEED) for b in (None, 0, 1, 2, 3)}


def test_branch_0_is_the_tasks_own_corpus(built):
    _, corpora = built
    assert corpus_fingerprint(corpora[0]) == corpus_fingerprint(corpora[None])


def test_rows_of_earlier_stages_are_byte_identical_across_branches(built):
    task, corpora = built
    moving = set(task.exchangeable) | set(getattr(task, "branch_derived", ()))

    def fixed(corpus):
        return [row for row in corpus["train"] if row["subset"] not in moving]

    reference = fixed(corpora[None])
    assert reference
    for branch in (1, 2, 3):
        assert fixed(corpora[branch]) == reference


def test_only_keys_unseen_before_the_branch_stage_move(built):
    task, corpora = built
    earlier = {row["key"] for row in corpora[None]["train"] if row["subset"] not in task.exchangeable and row["key"]}
    pool = set().union(*(_keys(corpora[None], s) for s in task.exchangeable))
    assert pool and not pool & earlier
    for branch in (1, 2, 3):
        assert set().union(*(_keys(corpora[branch], s) for s in task.exchangeable)) == pool
        for subset in task.subsets:
            if subset not in task.exchangeable and subset not in getattr(task, "branch_derived", ()):
                assert _keys(corpora[branch], subset) == _keys(corpora[None], subset)


def test_a_pair_exchanges_its_halves_key_for_key_and_sizes_stay(built):
    task, corpora = built
    first, second = task.counterbalanced
    for even in (0, 2):
        assert _keys(corpora[even], first) == _keys(corpora[even + 1], second)
        assert _keys(corpora[even], second) == _keys(corpora[even + 1], first)
    assert _keys(corpora[2], first) != _keys(corpora[0], first)  # pair 1 is a new split
    for branch in (1, 2, 3):
        for subset in task.exchangeable:
            assert len(_keys(corpora[branch], subset)) == len(_keys(corpora[None], subset))
            sizes = Counter(s for s in corpora[branch]["test"]["subset"])
            assert sizes[subset] == Counter(corpora[None]["test"]["subset"])[subset]


def test_definitions_carry_the_tag_of_their_new_subset(built):
    task, corpora = built
    first, second = task.counterbalanced
    tag_of = {}
    for row in corpora[None]["train"]:
        if row["kind"] == "definition" and row["subset"] in (first, second):
            tag_of.setdefault(row["subset"], set()).add(row["text"].split()[0])
    for row in corpora[3]["train"]:
        if row["kind"] == "definition" and row["subset"] in (first, second):
            assert {row["text"].split()[0]} == tag_of[row["subset"]]


def test_the_toy_keeps_one_alias_per_bucket_and_number():
    table = [
        entry
        for entry in ModMulTask(modulus=12, aliases_per_number=4, bucket_by="alias", branch=2).branch_table(
            ModMulTask(modulus=12, aliases_per_number=4, bucket_by="alias").alias_table(
                __import__("random").Random(SEED)
            ),
            SEED,
        )
    ]
    for number in range(12):
        assert sorted(bucket for _, n, bucket in table if n == number) == ["x1f", "x1t", "x2f", "x2t"]


def test_the_same_seed_and_branch_give_the_same_corpus_in_another_process():
    code = (
        "from iml_hf.data.corpus import corpus_fingerprint; from iml_hf.tasks.entities import EntitiesTask; "
        f"print(corpus_fingerprint(EntitiesTask(num_entities=120, branch=3).build({SEED})))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert other == corpus_fingerprint(EntitiesTask(num_entities=120, branch=3).build(SEED))


def test_resplit_refuses_unequal_halves():
    assignment = {"a": "d1", "b": "d1", "c": "d2"}
    with pytest.raises(ValueError, match="same number of keys"):
        resplit(assignment, ("d1", "d2"), ("d1", "d2"), 0, 1)


def test_a_task_without_exchangeable_subsets_cannot_branch():
    from iml_hf.tasks.resplit import check_branch

    with pytest.raises(ValueError, match="cannot branch"):
        check_branch("x", 1, ())
    with pytest.raises(ValueError, match="integer >= 0"):
        check_branch("x", -1, ("d1",))
