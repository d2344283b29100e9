"""The T-REx loader on small JSON files written in the real format (documents with ``triples``)."""

from __future__ import annotations

import json

import pytest
from conftest import all_d1_entities_task

from iml_hf.tasks.trex import TREX_TEMPLATES, iter_trex_triplets, load_trex


def triple(subject: str, predicate: str, obj: str) -> dict:
    """One T-REx triple as the dataset writes it."""
    return {
        "subject": {
            "uri": f"http://www.wikidata.org/entity/Q{len(subject)}",
            "surfaceform": subject,
            "boundaries": [0, len(subject)],
            "annotator": "Wikidata_Spotlight_Entity_Linker",
        },
        "predicate": {
            "uri": f"http://www.wikidata.org/prop/direct/{predicate}",
            "surfaceform": None,
            "boundaries": None,
            "annotator": "NoSubject-Triple-aligner",
        },
        "object": {
            "uri": f"http://www.wikidata.org/entity/Q{len(obj)}",
            "surfaceform": obj,
            "boundaries": [10, 10 + len(obj)],
            "annotator": "Wikidata_Spotlight_Entity_Linker",
        },
        "sentence_id": 0,
        "dependency_path": None,
        "confidence": 1.0,
        "annotator": "NoSubject-Triple-aligner",
    }


def document(docid: str, triples: list[dict]) -> dict:
    return {
        "docid": docid,
        "uri": f"http://www.wikidata.org/entity/{docid}",
        "text": "Some text .",
        "words_boundaries": [],
        "entities": [],
        "sentences_boundaries": [[0, 11]],
        "triples": triples,
    }


BOOK = [  # 5 predicates; two genres, two languages under one question, a date inside a string
    ("Emma (novel)", "P50", "Jane Austen"),
    ("Emma (novel)", "P123", "John Murray"),
    ("Emma (novel)", "P577", "published 23 December 1815"),
    ("Emma (novel)", "P136", "romance novel"),
    ("Emma (novel)", "P136", "comedy of manners"),
    ("Emma (novel)", "P407", "English"),
    ("Emma (novel)", "P364", "French"),
    ("Emma (novel)", "P17", "United Kingdom"),  # not a default predicate
]
FILM = [  # director and screenwriter with the same name: one (entity, answer) pair survives
    ("Dr. Strangelove", "P57", "Stanley Kubrick"),
    ("Dr. Strangelove", "P58", "Stanley Kubrick"),
    ("Dr. Strangelove", "P58", "Terry Southern"),
    ("Dr. Strangelove", "P577", "1964"),
    ("Dr. Strangelove", "P136", "black comedy"),
    ("Dr. Strangelove", "P1040", "Anthony Harvey"),
    ("Dr. Strangelove", "P86", "Cher"),  # one-word name: dropped
]
FEW = [  # 3 distinct predicates (4 triplets)
    ("Short Story", "P50", "Ann Writer"),
    ("Short Story", "P136", "horror"),
    ("Short Story", "P136", "fantasy"),
    ("Short Story", "P407", "German"),
]
MERGED = [  # 4 raw predicates, but P407 and P364 ask one question: 3 questions
    ("Merged Film", "P407", "English"),
    ("Merged Film", "P364", "Spanish"),
    ("Merged Film", "P136", "drama"),
    ("Merged Film", "P921", "war"),
]
PRONOUN = [("It", p, f"value {p}") for p in ("P50", "P123", "P136", "P921")]
PRONOUN_OBJECT = [("Quiet Book", "P50", "he"), *[("Quiet Book", p, f"x {p}") for p in ("P123", "P136", "P921")]]
WORKS = [(f"Work {i:02d}", p, f"{p} value {i}") for i in range(20) for p in ("P123", "P136", "P921", "P179")]


@pytest.fixture
def trex_dir(tmp_path):
    folder = tmp_path / "t-rex"
    folder.mkdir()
    first = [document("Q1", [triple(*t) for t in BOOK + FEW]), document("Q2", [triple(*t) for t in FILM])]
    second = [document("Q3", [triple(*t) for t in MERGED + PRONOUN + PRONOUN_OBJECT + WORKS + BOOK[:2]])]
    (folder / "re-nlg_0-10000.json").write_text(json.dumps(first))
    (folder / "re-nlg_10000-20000.json").write_text(json.dumps(second))
    return folder


def facts_of(kb):
    return {e: {f.relation: f.answer for f in facts} for e, facts in kb.facts_by_entity().items()}


def test_reads_documents_in_the_real_format(trex_dir):
    triplets = list(iter_trex_triplets(trex_dir))
    assert ("Emma (novel)", "P50", "Jane Austen") in triplets
    assert (
        len(triplets)
        == len(BOOK) + len(FEW) + len(FILM) + len(MERGED) + len(PRONOUN) + len(PRONOUN_OBJECT) + len(WORKS) + 2
    )


def test_min_predicates_filter_and_cleaning(trex_dir):
    facts = facts_of(load_trex(trex_dir))
    assert "Short Story" not in facts  # 3 predicates < 4
    assert "Merged Film" not in facts  # 3 questions once P407/P364 merge
    assert "It" not in facts and "Quiet Book" not in facts  # pronoun subject; pronoun object leaves 3
    emma = facts["Emma"]  # parentheses cut from the subject
    assert emma["P50"] == "Jane"  # first name of a person answer
    assert emma["P123"] == "John Murray"
    assert emma["P577"] == "19 century"  # year found inside the string, anonymised
    assert "P17" not in emma
    assert set(emma["P136"].split(";")) == {"romance novel", "comedy of manners"}
    assert "P364" not in emma and set(emma["P407"].split(";")) == {"English", "French"}
    assert set(facts_of(load_trex(trex_dir, min_predicates_per_subject=3))) >= {"Short Story", "Merged Film"}


def test_film_answers(trex_dir):
    film = facts_of(load_trex(trex_dir))["Dr. Strangelove"]
    assert film["P577"] == "1960s" and film["P1040"] == "Anthony" and "P86" not in film
    stanley = [r for r in ("P57", "P58") if "Stanley" in film.get(r, "").split(";")]
    assert len(stanley) == 1  # the same answer is kept for one question of the entity only
    assert "Terry" in film["P58"].split(";")


def test_templates_make_the_expected_questions(trex_dir):
    kb = load_trex(trex_dir)
    assert all("[X]" in t and t.endswith(" ?") for t in TREX_TEMPLATES.values())
    assert TREX_TEMPLATES["P19"] == "Where was [X] born ?"
    assert kb.question("P50", "Emma") == "First name of the author of Emma ?"
    assert kb.question("P577", "Emma") == "When was Emma published or released ?"


def test_subsample_is_deterministic_and_depends_on_seed(trex_dir):
    all_entities = set(load_trex(trex_dir).entities)
    assert len(all_entities) == 22  # Emma, Dr. Strangelove and the 20 works
    first = load_trex(trex_dir, max_entities=5, seed=0)
    assert len(first.entities) == 5 and set(first.entities) <= all_entities
    assert load_trex(trex_dir, max_entities=5, seed=0).facts == first.facts
    assert set(load_trex(trex_dir, max_entities=5, seed=1).entities) != set(first.entities)


def test_max_predicates_per_subject(trex_dir):
    kb = load_trex(trex_dir, max_predicates_per_subject=4)
    assert max(len(f) for f in kb.facts_by_entity().values()) == 4


def test_flat_triplet_records_and_file_list(tmp_path):
    path = tmp_path / "triplets.json"
    path.write_text(json.dumps([{"subj": s, "predicate": p, "obj": o} for s, p, o in BOOK]))
    assert facts_of(load_trex([path]))["Emma"]["P50"] == "Jane"


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_trex(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"docid": "Q1", "text": "no triples here"}]))
    with pytest.raises(ValueError, match="triples"):
        load_trex(bad)
    with pytest.raises(ValueError, match="P9999"):
        load_trex(bad, predicates=["P9999"])


# ----------------------------------------------------------------- the entity task on T-REx files


def _entities_task(path, **overrides):
    return all_d1_entities_task("trex", path, **{"num_entities": 22, **overrides})


def test_a_multi_answer_fact_trains_its_first_answer_and_scores_any(trex_dir):
    from iml_hf.measure.qa_match import score_answers

    genres = facts_of(load_trex(trex_dir))["Emma"]["P136"]
    first, second = genres.split(";")
    corpus = _entities_task(trex_dir).build(0)
    trained = [r for r in corpus["train"] if r["prompt"] == "What is the genre of Emma ?"]
    assert [r["text"] for r in trained] == [f"What is the genre of Emma ? {first}"]
    assert not [r for r in corpus["train"] if ";" in r["text"]]
    held = [
        r for r in corpus["test"] if r["referent"] == "Emma" and "genre" in r["prompt"] and r["subset"] == "d1consis"
    ]
    assert len(held) == 1 and held[0]["answer"] == genres
    assert score_answers([second, first, "horror"], [genres] * 3)["em"] == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"docid": "Q1", "triples": [{"subject": ', r"not valid JSON \(the file ends early: truncated\?\)"),
        ('{"docid": "Q1", "triples": []}', "must hold a JSON list of documents, not a JSON dict"),
        ('[{"docid": "Q1", "text": "no triples"}]', "record 0: expected a document with 'triples'"),
        ('[{"triples": [{"subject": "Emma", "object": "x"}]}]', "record 0: expected a document"),
        ("", "is empty"),
    ],
)
def test_a_bad_trex_file_is_a_clear_error(tmp_path, content, message):
    from iml_hf.config.validation import RecipeError

    path = tmp_path / "re-nlg.json"
    path.write_text(content)
    with pytest.raises(RecipeError, match=message) as error:
        _entities_task(path).build(0)
    assert str(error.value).startswith(f"task.kb_path={str(path)!r} cannot be read as task.knowledge_base=trex: ")
    assert "point task.kb_path at T-REx JSON files" in str(error.value)


def test_a_trex_file_too_small_for_the_recipe(trex_dir):
    from iml_hf.config.validation import RecipeError

    with pytest.raises(
        RecipeError,
        match=r"gives 22 subjects with 4 or more of the predicates, fewer than "
        r"task.num_entities=23; set --task.num_entities=22 or less",
    ):
        _entities_task(trex_dir, num_entities=23).build(0)
