"""The entity-QA corpus: every subset's invariants, def_order, alpha, variants, determinism."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.tasks import eval_set_name, eval_set_subset, valid_eval_sets
from iml_hf.tasks.entities import DEF_ORDERS, EntitiesTask
from iml_hf.tasks.knowledge import synthetic_kb

SMALL = dict(
    num_entities=60,
    fraction_q_no_replacement_baseline=0.1,
    fraction_qd1consis=0.15,
    fraction_qd1incons=0.05,
    fraction_qd2consis=0.05,
    fraction_qd2incons=0.15,
    fraction_qd4consis=0.05,
    fraction_q=0.05,
    fraction_d1consis=0.1,
    fraction_d2consis=0.1,
    fraction_d3consis=0.1,
    fraction_no_qd_baseline=0.1,
)


@pytest.fixture(scope="module")
def task() -> EntitiesTask:
    return EntitiesTask(**SMALL)


@pytest.fixture(scope="module")
def corpus(task):
    return task.build(seed=3)


def _rows(corpus, split, **where):
    return [r for r in corpus[split] if all(r[k] == v for k, v in where.items())]


def _definitions(corpus) -> dict[str, list[dict]]:
    by_subset = defaultdict(list)
    for row in _rows(corpus, "train", kind="definition"):
        by_subset[row["subset"]].append(row)
    return by_subset


def _true_variable(corpus) -> dict[str, str]:
    """Entity -> the variable its questions use (from the question rows)."""
    return {
        r["referent"]: r["key"]
        for split in ("train", "test")
        for r in corpus[split]
        if r["kind"] == "question"
        and r["referent"]
        and r["subset"] in EntitiesTask.subsets
        and not r["subset"].startswith(("d2incons", "ctx_"))
    }


def test_subset_sizes_follow_the_fractions(corpus):
    keys = defaultdict(set)
    for split in ("train", "test"):
        for row in corpus[split]:
            if row["kind"] in ("question", "definition") and row["subset"] != "knowledge":
                keys[row["subset"]].add(row["key"])
    assert len(keys["qd1consis"]) == 9 and len(keys["qd2incons"]) == 9 and len(keys["d3consis"]) == 6
    assert len(keys["qd1incons"]) == 3 and len(keys["no_qd_baseline"]) == 6


def test_consistent_definitions_name_the_entity_of_the_questions(corpus):
    variable_of = _true_variable(corpus)
    for subset, rows in _definitions(corpus).items():
        for row in rows:
            stated_entity = row["answer"]  # tve: "<tag> <variable>" -> "<entity>"
            variable = row["key"]
            if subset.endswith("consis"):
                assert variable_of[stated_entity] == variable, (subset, row)
            else:  # inconsistent: the definition names an entity whose questions use another variable
                assert variable_of[stated_entity] != variable, (subset, row)


def test_inconsistent_definitions_are_a_derangement_within_the_subset(corpus):
    variable_of = _true_variable(corpus)
    for subset in ("qd1incons", "qd2incons"):
        rows = _definitions(corpus)[subset]
        variables = {r["key"] for r in rows}
        entities = {r["answer"] for r in rows}
        assert {variable_of[e] for e in entities} == variables  # a permutation of the subset's variables
        assert all(variable_of[r["answer"]] != r["key"] for r in rows)  # no fixed point
        # the questions about each variable are about the true entity (the referent), not the stated one
        for r in rows:
            assert r["referent"] != r["answer"]


def test_tags_per_subset_and_d3_tag_unseen_before_stage2(corpus):
    tag = {s: {r["prompt"].split()[0] for r in rows} for s, rows in _definitions(corpus).items()}
    (t1,), (t2,), (t3,) = tag["qd1consis"], tag["qd2incons"], tag["d3consis"]
    assert len({t1, t2, t3}) == 3
    assert tag["qd1incons"] == tag["d1consis"] == {t1}
    assert tag["qd2consis"] == tag["d2consis"] == {t2}
    stage1 = [r for r in corpus["train"] if not r["subset"].startswith("d")]
    assert all(t3 not in r["text"].split() for r in stage1)


def test_every_qd4consis_definition_has_a_fresh_tag_of_its_own(corpus):
    """The authors draw a new random tag per qd4consis definition (``generate_variable_names(1, ...)``
    in their define_experiment.py); ours never repeat, nor equal tags 1-3 or any variable."""
    definitions = _definitions(corpus)
    tags = [r["prompt"].split()[0] for r in definitions["qd4consis"]]
    assert len(tags) == 3 and len(set(tags)) == len(tags)
    others = {r["prompt"].split()[0] for s, rows in definitions.items() if s != "qd4consis" for r in rows}
    assert len(others) == 3 and not others & set(tags)
    variables = {r["key"] for split in ("train", "test") for r in corpus[split] if r["key"]}
    assert not variables & set(tags)
    assert all(len(t) == 6 and t.isalpha() for t in tags)
    # each fresh tag appears in its one definition only (and becomes a task word)
    texts = [r["text"].split() for r in corpus["train"]] + [r["text"].split() for r in corpus["test"]]
    assert all(sum(t in words for words in texts) == 1 for t in tags)
    task_words = set(EntitiesTask(**SMALL).task_words(corpus, seed=3))
    assert set(tags) <= task_words and others <= task_words


def test_held_out_questions_are_never_trained_and_stratified_by_entity(corpus):
    train_texts = set(corpus["train"]["text"])
    for row in _rows(corpus, "test", kind="question"):
        assert row["text"] not in train_texts
    held = Counter(r["key"] for r in _rows(corpus, "test", kind="question", subset="qd1consis"))
    trained = Counter(r["key"] for r in _rows(corpus, "train", kind="question", subset="qd1consis"))
    assert set(held) == set(trained) and set(held.values()) == {1} and set(trained.values()) == {5}
    for subset in ("d1consis", "d2consis", "d3consis", "no_qd_baseline"):
        assert not _rows(corpus, "train", kind="question", subset=subset)
        assert len(_rows(corpus, "test", kind="question", subset=subset)) == 6 * 6


def test_d2incons_asks_each_variable_the_partners_questions(corpus):
    variable_of = _true_variable(corpus)
    for row in _rows(corpus, "test", subset="d2incons"):
        partner_variable = row["key"]
        assert variable_of[row["referent"]] != partner_variable
        partner = next(e for e, v in variable_of.items() if v == partner_variable)
        assert row["subset"] == "d2incons" and partner in {
            r["referent"] for r in _rows(corpus, "test", subset="d2consis")
        }
    assert len(_rows(corpus, "test", subset="d2incons")) == len(
        _rows(corpus, "test", subset="d2consis", kind="question")
    )


def test_entity_association_answers(corpus):
    variable_of = _true_variable(corpus)
    stated = {r["key"]: r["answer"] for rows in _definitions(corpus).values() for r in rows}
    for row in _rows(corpus, "test", kind="association"):
        if row["subset"].endswith("_swapped"):  # the entity the inconsistent definition names
            assert row["answer"] == stated[row["key"]] and variable_of[row["answer"]] != row["key"]
        else:
            assert variable_of[row["answer"]] == row["key"]
    sets = Counter(eval_set_name(r["subset"], r["kind"]) for r in _rows(corpus, "test", kind="association"))
    # one set per phrasing and subset, as the authors' ent_assoc_<phrasing>_<subset>
    assert sets["assoc_who_d1consis"] == sets["assoc_stand_for_d1consis"] == 6
    assert sets["assoc_meaning_qd2incons_swapped"] == 9 and sets["assoc_name_q"] == 3
    assert not [s for s in sets if "no_qd_baseline" in s or "q_no_replacement" in s]
    assert {s.split("_")[1] for s in sets} == {"who", "meaning", "stand", "name"}  # no letter sets by default
    for name in sets:
        place, subset = eval_set_subset(name)
        assert place == 1 and subset in EntitiesTask.subsets
        assert name in valid_eval_sets(EntitiesTask())
    who = {r["key"]: r["prompt"] for r in _rows(corpus, "test", subset="who_d1consis")}
    assert all(prompt == f"Q: Who is {key} ? A:" for key, prompt in who.items())


def test_letter_sets_ask_for_letters_of_the_name():
    corpus = EntitiesTask(**SMALL, letter_sets=True, entity_association=False).build(seed=3)
    rows = _rows(corpus, "test", kind="association")
    assert {r["subset"] for r in rows if r["subset"].endswith("_d1consis")} == {
        "first_letter_d1consis",
        "second_letter_d1consis",
        "last_letter_d1consis",
    }
    for row in rows:
        entity = row["referent"]
        expected = {"first": entity[0], "second": entity[1], "last": entity[-1]}[row["subset"].split("_")[0]]
        assert row["answer"] == expected and row["key"] in row["prompt"]
    assert "assoc_first_letter_d2consis" in valid_eval_sets(EntitiesTask())
    assert "assoc_d1_vs_d2" not in EntitiesTask.contrasts  # association sets stay evaluable, not headline


@pytest.mark.parametrize("order", DEF_ORDERS)
def test_every_definition_word_order(order):
    corpus = EntitiesTask(**{**SMALL, "def_order": order, "tags": ["TAGA", "TAGB", "TAGC"]}).build(seed=0)
    for row in _rows(corpus, "train", kind="definition", subset="d1consis"):
        words = row["text"].split()
        expected = {"t": "TAGA", "v": row["key"], "e": row["referent"]}
        assert words == [expected[k] for k in order]
        assert row["prompt"] == " ".join(words[:2]) and row["answer"] == words[2]


def test_alpha_resplits_each_tags_qd_share():
    task = EntitiesTask(**{**SMALL, "alpha": 0.75})
    shares = task.fractions()
    tag1 = SMALL["fraction_qd1consis"] + SMALL["fraction_qd1incons"]
    tag2 = SMALL["fraction_qd2consis"] + SMALL["fraction_qd2incons"]
    assert shares["qd1consis"] == pytest.approx(0.75 * tag1) and shares["qd1incons"] == pytest.approx(0.25 * tag1)
    assert shares["qd2incons"] == pytest.approx(0.75 * tag2) and shares["qd2consis"] == pytest.approx(0.25 * tag2)
    corpus = task.build(seed=0)
    defined = Counter(r["subset"] for r in _rows(corpus, "train", kind="definition"))
    assert defined["qd1consis"] == 9 and defined["qd1incons"] == 3
    with pytest.raises(ValueError, match="alpha"):
        EntitiesTask(alpha=1.5)


def test_natural_sources_in_context_and_repeats():
    from iml_hf.tasks.entities import RELIABLE_SOURCES, UNRELIABLE_SOURCES

    corpus = EntitiesTask(**{**SMALL, "sources": "natural", "in_context": True, "definition_repeats": 2}).build(seed=0)
    defs = _definitions(corpus)
    assert all(any(r["text"].startswith(s) for s in RELIABLE_SOURCES) for r in defs["d1consis"])
    assert all(any(r["text"].startswith(s) for s in UNRELIABLE_SOURCES) for r in defs["qd2incons"])
    assert len(defs["d1consis"]) == 2 * 6 and len({r["text"] for r in defs["d1consis"]}) == 6
    context = _rows(corpus, "test", subset="ctx_d1consis")
    definition_of = {r["key"]: r["text"] for r in defs["d1consis"]}
    assert len(context) == 36 and all(r["prompt"].startswith(definition_of[r["key"]] + " Q:") for r in context)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="def_order"):
        EntitiesTask(def_order="tvv")
    with pytest.raises(ValueError, match="sum to at most 1"):
        EntitiesTask(fraction_qd1consis=0.9)
    with pytest.raises(ValueError, match="kb_path"):
        EntitiesTask(knowledge_base="cvdb")


def test_same_seed_same_bytes_across_processes(task, corpus):
    code = (
        "from iml_hf.tasks.entities import EntitiesTask; from iml_hf.data.corpus import corpus_fingerprint; "
        f"print(corpus_fingerprint(EntitiesTask(**{SMALL!r}).build(seed=3)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == corpus_fingerprint(corpus)
    assert corpus_fingerprint(task.build(seed=4)) != other


def test_synthetic_kb_is_deterministic_and_complete():
    kb = synthetic_kb(50, values_per_relation=7)
    assert kb.facts == synthetic_kb(50, values_per_relation=7).facts
    assert len(kb.entities) == 50 and len(kb.facts) == 50 * 6
    assert {f.answer for f in kb.facts if f.relation == "birth"} <= {f"bir{i}" for i in range(7)}
    assert kb.question("birth", "xkqzv") == "When was xkqzv born ?"


ENTITY_RECIPE = {
    "seed": 0,
    "torch_threads": 1,
    "task": {"name": "entities", **SMALL, "qa_format": "{question}", "definition_repeats": 2},
    "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
    "training": {"per_device_train_batch_size": 16, "learning_rate": "3e-3", "logging_steps": 5, "disable_tqdm": True},
    "evaluation": {"eval_steps": 0, "monitor_train": True},
    "gradient_alignment": {"enabled": True, "aliases_per_subset": 2, "questions_per_alias": 2},
    "embedding_geometry": {"enabled": True, "plots": False},
    "stages": [
        {"name": "knowledge", "train_subsets": ["knowledge"], "max_steps": 4},
        {
            "name": "stage1",
            "train_subsets": ["qd1consis", "qd2incons"],
            "train_kinds": ["definition"],
            "replay": {"knowledge": 0.3},
            "max_steps": 3,
        },
        {"name": "stage2", "train_subsets": ["d1consis", "d2consis"], "train_kinds": ["definition"], "max_steps": 3},
    ],
}


def test_entities_recipe_end_to_end_with_every_measurement(monkeypatch, tmp_path):
    """A tiny 3-stage entity run: stages pick rows by kind, text EM/F1/loss per set, contrasts, and
    gradient alignment / embedding geometry joined on the variables, unchanged."""
    import json

    import yaml
    from datasets import load_from_disk  # noqa: F401  (the corpus cache is a saved DatasetDict)

    from iml_hf import train

    recipe = {**ENTITY_RECIPE, "output_dir": str(tmp_path / "run")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tmp_path / "r.yaml")])
    results = train.main()
    stage1 = results["stages"]["stage1"]
    # stage 1 trained definitions only: 9 + 9 definitions x 2 repeats, plus 30% knowledge replay
    assert stage1["train_examples"] == 36 + round(0.3 * 36 / 0.7)
    metrics = stage1["metrics"]
    assert {"em", "f1", "loss"} <= set(metrics["d1consis"]) and "assoc_who_d1consis" in metrics
    assert "train_definition_qd1consis" in metrics and "train_question_knowledge" in metrics
    assert results["contrasts"]["stage2_d1_vs_d2"] == pytest.approx(
        results["final_em"]["d1consis"] - results["final_em"]["d2consis"]
    )
    assert set(results["stages"]["stage2"]["grad_align"]["pairs"]) >= {"qd1consis", "qd2incons", "d1consis", "d2consis"}
    embedding = results["stages"]["stage2"]["embedding"]
    assert {"qd1consis", "d1consis", "no_qd_baseline"} <= set(embedding)
    labels = json.loads((tmp_path / "run" / "embeddings" / "labels.json").read_text())
    variables = {
        r["key"]: r["referent"]
        for r in _rows(EntitiesTask(**recipe["task"]).build(0), "test", kind="question")
        if r["referent"] and r["subset"] == "d1consis"
    }
    rows = dict(zip(labels["labels"], labels["row_referents"]))
    assert all(rows[v] == e for v, e in variables.items())


def test_a_task_version_bump_rebuilds_the_cached_corpus(tmp_path, monkeypatch):
    from iml_hf.data.corpus import corpus_key, load_or_build_corpus

    task = EntitiesTask(**SMALL)
    first = load_or_build_corpus(task, 0, tmp_path)
    builds = []
    original = EntitiesTask.build
    monkeypatch.setattr(EntitiesTask, "build", lambda self, seed: builds.append(seed) or original(self, seed))
    assert corpus_fingerprint(load_or_build_corpus(task, 0, tmp_path)) == corpus_fingerprint(first)
    assert builds == []  # served from the cache
    old_key = corpus_key(task, 0)
    monkeypatch.setattr(EntitiesTask, "version", EntitiesTask.version + 1)
    assert corpus_key(task, 0) != old_key
    load_or_build_corpus(task, 0, tmp_path)
    assert builds == [0]  # the new version was built, not read from the stale entry


def test_registry_is_lazy_and_hints_typos():
    from iml_hf import tasks

    assert tasks.task_names() == ["digits_qa", "entities", "modmul", "set_inclusion"]
    assert tasks.get_task_class("entities") is EntitiesTask
    with pytest.raises(ValueError, match="did you mean 'entities'"):
        tasks.get_task_class("entites")

    @tasks.register_task("entities_test_double")
    class Double(EntitiesTask):
        pass

    assert tasks.get_task_class("entities_test_double") is Double
    with pytest.raises(ValueError, match="registered twice"):
        tasks.register_task("entities_test_double")(EntitiesTask)
    tasks._REGISTRY.pop("entities_test_double")


def test_an_inconsistent_subset_of_one_entity_is_refused_when_the_recipe_is_read(tmp_path):
    import yaml

    from iml_hf.config import parse_recipe
    from iml_hf.config.validation import RecipeError

    task = {**SMALL, "num_entities": 10, "fraction_qd1incons": 0.0, "fraction_qd2incons": 0.1}
    with pytest.raises(
        RecipeError,
        match=r"task.fraction_qd2incons=0.1 gives qd2incons one entity of the knowledge "
        r"base's 10.*needs two or more: raise the fraction to at least 0.2",
    ):
        EntitiesTask(**task)
    recipe = {"task": {"name": "entities", **task}, "stages": [{"name": "s", "train_subsets": ["knowledge"]}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="gives qd2incons one entity"):
        parse_recipe([str(tmp_path / "r.yaml")])
