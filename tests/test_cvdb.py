"""The CVDB loader on a small CSV written in the real format (real column names, latin-1 bytes)."""

from __future__ import annotations

import csv
import io

import pytest
from conftest import all_d1_entities_task

from iml_hf.tasks.cvdb import CVDB_TEMPLATES, anonymize_year, load_cvdb, parse_citizenship

HEADER = [
    "wikidata_code",
    "name",
    "birth",
    "death",
    "gender",
    "level1_main_occ",
    "level3_main_occ",
    "string_citizenship_raw_d",
    "un_region",
    "wiki_readers_2015_2018",
]

# wikidata_code, name, birth, death, gender, level1, level3, citizenship, region, readers
ROWS = [
    ["Q1", "Marie_Curie_Doe", "1867", "1934", "Female", "Discovery", "physicist", "'Poland'_'France'", "Europe", "700"],
    ["Q2", "Aristotle", "-384", "-322", "Male", "Discovery", "philosopher", "'Greece'", "Europe", "900"],
    ["Q3", "Émilie_du_Châtelet", "1706", "1749", "Female", "Discovery", "mathematician", "'France'", "Europe", "800"],
    [
        "Q4",
        "Ada_Byron",
        "1955",
        "2015",
        "Female",
        "Culture",
        "film_director",
        "'United_Kingdom'_'Ireland'",
        "Europe",
        "300",
    ],
    ["Q5", "Bob_Builder", "1873.0", "1950.0", "Male", "Culture", "painter", "'France'", "Europe", "500"],
    ["Q6", "Carl_Nodeath", "1900", "", "Male", "Culture", "writer", "'Germany'", "Europe", "850"],  # no death
    ["Q7", "Dora_Noregion", "1901", "1999", "Female", "Culture", "singer", "'Italy'", "", "10000"],  # no region
    ["Q8", "Jean-Paul_Hyphen", "1905", "1980", "Male", "Culture", "writer", "'France'", "Europe", "5000"],  # bad name
    ["Q9", "Eve_Smallreach", "1920", "1990", "Female", "Culture", "singer", "'Italy'", "Europe", "50"],
    ["Q10", "Fay_Other", "1920", "1990", "Other", "Culture", "singer", "'Italy'", "Europe", "99999"],
    ["Q11", "Gus_Tie", "1920", "1990", "Male", "Culture", "singer", "'Italy'", "Americas", "500"],  # ties Bob
    ["Q12", "Hal_Badocc", "1920", "1990", "Male", "Culture", "singer/actor", "'Italy'", "Europe", "4000"],
]


def write_cvdb(path, rows=ROWS, header=HEADER):
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    path.write_bytes(text.getvalue().encode("latin-1"))
    return path


@pytest.fixture
def cvdb_csv(tmp_path):
    return write_cvdb(tmp_path / "cross-verified-database.csv")


def facts_of(kb):
    return {e: {f.relation: f.answer for f in facts} for e, facts in kb.facts_by_entity().items()}


def test_file_is_latin1_and_accents_survive(cvdb_csv):
    with pytest.raises(UnicodeDecodeError):
        cvdb_csv.read_bytes().decode("utf-8")
    kb = load_cvdb(cvdb_csv, num_entities=4)
    assert "Émilie du Châtelet" in kb.entities
    assert facts_of(kb)["Émilie du Châtelet"]["birth"] == "18 century"


@pytest.mark.parametrize(
    "year, expected",
    [
        (1873, "19 century"),
        (1900, "19 century"),
        (1901, "1900s"),
        (1953, "1950s"),
        (1999, "1990s"),
        (2000, "2000"),
        (2015, "2015"),
        (1706, "18 century"),
        (-384, "4 century BC"),
        (-322, "4 century BC"),
    ],
)
def test_anonymize_year_centuries_then_decades(year, expected):
    assert anonymize_year(year) == expected


def test_gender_balanced_top_n_by_readership(cvdb_csv):
    kb = load_cvdb(cvdb_csv, num_entities=4)
    # men first, then women, each by decreasing readership; the missing-death (850), missing-region
    # (10000), hyphenated-name (5000), bad-occupation (4000) and non-binary (99999) rows never count
    assert kb.entities == ["Aristotle", "Bob Builder", "Émilie du Châtelet", "Marie Curie Doe"]
    facts = facts_of(kb)
    assert [facts[e]["gender"] for e in kb.entities] == ["Male", "Male", "Female", "Female"]
    assert len(kb.facts) == 4 * 6 and all(set(f) == set(CVDB_TEMPLATES) for f in facts.values())


def test_ties_keep_file_order_and_more_entities(cvdb_csv):
    kb = load_cvdb(cvdb_csv, num_entities=8)
    assert kb.entities == [
        "Aristotle",
        "Bob Builder",
        "Gus Tie",
        "Émilie du Châtelet",
        "Marie Curie Doe",
        "Ada Byron",
        "Eve Smallreach",
    ]
    assert not {"Carl Nodeath", "Dora Noregion", "Jean-Paul Hyphen", "Hal Badocc", "Fay Other"} & set(kb.entities)


def test_without_gender_balance_takes_overall_top(cvdb_csv):
    kb = load_cvdb(cvdb_csv, num_entities=3, equalize_gender=False)
    assert kb.entities == ["Fay Other", "Aristotle", "Émilie du Châtelet"]


def test_answers_are_converted(cvdb_csv):
    facts = facts_of(load_cvdb(cvdb_csv, num_entities=8))
    assert facts["Aristotle"] == {
        "gender": "Male",
        "birth": "4 century BC",
        "death": "4 century BC",
        "region": "Europe",
        "occupation": "philosopher",
        "nationality": "Greece",
    }
    assert facts["Bob Builder"]["birth"] == "19 century" and facts["Bob Builder"]["death"] == "1950s"
    assert facts["Ada Byron"]["birth"] == "1950s" and facts["Ada Byron"]["death"] == "2015"
    assert facts["Ada Byron"]["occupation"] == "film director"
    assert facts["Ada Byron"]["nationality"] == "United Kingdom;Ireland"
    assert facts["Marie Curie Doe"]["nationality"].split(";") == ["Poland", "France"]


def test_parse_citizenship():
    assert parse_citizenship("'United_States'") == "United States"
    assert parse_citizenship("'France'_'Germany'_'France'") == "France;Germany"


def test_templates_make_the_expected_questions(cvdb_csv):
    kb = load_cvdb(cvdb_csv, num_entities=2)
    assert all("[X]" in t and t.endswith(" ?") for t in kb.templates.values())
    assert kb.question("birth", "Aristotle") == "When was Aristotle born ?"
    assert kb.question("nationality", "Émilie du Châtelet") == "What was the nationality of Émilie du Châtelet ?"


def test_deterministic(cvdb_csv):
    assert load_cvdb(cvdb_csv, num_entities=6).facts == load_cvdb(cvdb_csv, num_entities=6).facts


def test_missing_column_and_file_are_reported(tmp_path):
    header = [c for c in HEADER if c != "un_region"]
    rows = [[v for c, v in zip(HEADER, row) if c != "un_region"] for row in ROWS]
    bad = write_cvdb(tmp_path / "bad.csv", rows, header)
    with pytest.raises(ValueError, match="un_region"):
        load_cvdb(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_cvdb(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match="num_entities"):
        load_cvdb(bad, num_entities=1)


# ----------------------------------------------------------------- the entity task on a CVDB file


def _entities_task(path, **overrides):
    return all_d1_entities_task("cvdb", path, **{"num_entities": 6, **overrides})


def test_a_multi_answer_fact_trains_its_first_answer_and_scores_any(cvdb_csv):
    from iml_hf.measure.qa_match import score_answers

    corpus = _entities_task(cvdb_csv).build(0)
    trained = [r for r in corpus["train"] if r["prompt"] == "What was the nationality of Marie Curie Doe ?"]
    assert [r["text"] for r in trained] == ["What was the nationality of Marie Curie Doe ? Poland"]
    assert trained[0]["answer"] == "Poland" and not [r for r in corpus["train"] if ";" in r["text"]]
    held = [
        r
        for r in corpus["test"]
        if r["referent"] == "Marie Curie Doe" and "nationality" in r["prompt"] and r["subset"] == "d1consis"
    ]
    assert len(held) == 1 and held[0]["answer"] == "Poland;France"
    scores = score_answers(["France", "Poland", "Poland;France", "Germany"], [held[0]["answer"]] * 4)
    assert scores["em"] == [1.0, 1.0, 0.0, 0.0]  # the joined list itself is no answer (and is never trained)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"wikidata_code,name,birth\nQ1,Ann,1900\n", r"lacks the columns \['death', 'gender'"),
        (bytes(range(256)) * 8, "is not a text file"),
        (b'[{"name": "Ann", "birth": 1900}]', "looks like JSON"),
        (b"", "is empty"),
    ],
)
def test_a_bad_cvdb_file_is_a_clear_error(tmp_path, content, message):
    from iml_hf.config.validation import RecipeError

    path = tmp_path / "people.csv"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=message) as error:
        _entities_task(path).build(0)
    text = str(error.value)
    assert text.startswith(f"task.kb_path={str(path)!r} cannot be read as task.knowledge_base=cvdb: ")
    assert "point task.kb_path at the Cross-Verified Database CSV" in text


def test_a_cvdb_file_too_small_for_the_recipe(cvdb_csv):
    from iml_hf.config.validation import RecipeError

    # 3 usable men and 4 women: 8 entities cannot be drawn, 6 can
    with pytest.raises(
        RecipeError,
        match=r"gives 7 usable people \(3 of the rarer gender.*fewer than "
        r"task.num_entities=8; set --task.num_entities=6 or less",
    ):
        _entities_task(cvdb_csv, num_entities=8).build(0)
    # an inconsistent subset of one entity has no other entity to name
    with pytest.raises(
        RecipeError,
        match=r"task.fraction_qd2incons=0.2 gives qd2incons one entity of the knowledge "
        r"base's 6.*at least 0.333",
    ):
        _entities_task(cvdb_csv, fraction_d1consis=0.8, fraction_qd2incons=0.2).build(0)
    assert _entities_task(cvdb_csv, fraction_d1consis=0.6, fraction_qd2incons=0.4).build(0)  # two: fine


def test_train_exits_2_on_a_bad_knowledge_base_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    import yaml

    bad = tmp_path / "people.csv"
    bad.write_text("name,birth\nAnn,1900\n", encoding="latin-1")
    recipe = {
        "output_dir": str(tmp_path / "run"),
        "torch_threads": 1,
        "task": {"name": "entities", "num_entities": 20},
        "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
        "training": {"per_device_train_batch_size": 4, "disable_tqdm": True},
        "stages": [{"name": "stage1", "train_subsets": ["knowledge"], "max_steps": 1}],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "iml_hf.train",
            str(tmp_path / "recipe.yaml"),
            "--task.knowledge_base=cvdb",
            f"--task.kb_path={bad}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"iml_hf.train: error: task.kb_path={str(bad)!r} cannot be read"), done.stderr
    assert "lacks the columns" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.csv", "recipe.yaml"]  # no run folder, no lock
