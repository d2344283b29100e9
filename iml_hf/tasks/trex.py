"""T-REx subject/predicate/object triplets as a :class:`KnowledgeBase`.

Krasheninnikov et al. (ICML 2024) repeat the entity-QA experiment on T-REx (Elsahar et al. 2018):
creative works (books, films, games, artworks) and questions about their author, publisher,
release date, genre and so on. This module reads the T-REx JSON files and returns those facts with
one question template per relation.

Input: T-REx JSON files, each a list of documents whose ``triples`` have ``subject`` / ``object``
``surfaceform`` and a ``predicate`` ``uri`` ending in the Wikidata property id (``.../P50``); a
directory stands for its ``*.json`` files. A list of flat ``{"subj", "obj", "predicate"}`` records
(the authors' intermediate file) is read too.

Following the authors' data code (``data_generation/trex_data.py`` of
``krasheninnikov/internalization``; re-implemented here, not copied):

* triplets are (subject surface form, property id, object surface form), duplicates dropped;
  a subject or object that is a pronoun (he, she, it, they) drops the triplet, and a subject with
  a single triplet in the whole input is dropped;
* only the predicates of ``predicates`` count (default :data:`DEFAULT_TREX_PREDICATES`, the
  authors' creative-works list); a subject needs ``min_predicates_per_subject`` distinct ones;
* a release date (P577) becomes its first four-digit year, anonymised as in CVDB
  (:func:`iml_hf.tasks.cvdb.anonymize_year`), and is dropped if it has none;
* anything from the first ``(`` to the last ``)`` is cut from subjects and objects
  (``Emma (novel)`` -> ``Emma``);
* the triplets are shuffled by ``seed``; of two triplets of one entity with the same answer only
  the first is kept; a person-valued predicate (author, director, ...) keeps the first name, and
  the triplet is dropped if the name is one word or the first word one letter;
* answers to one question are joined with ``;`` (predicates that share a question, P364/P407 and
  P98/P1040, are one relation, named by the first in :data:`TREX_TEMPLATES`);
* entities are sorted, shuffled by ``seed``, and the first ``max_entities`` with at least
  ``min_predicates_per_subject`` questions are kept, each with at most
  ``max_predicates_per_subject`` questions (a random subset).

Our choices: the triplets are sorted before the shuffle, so the result depends on ``seed`` and the
data alone (the authors' order came from a Python set); repeated answers in one ``;`` list are
dropped; film editors (P1040) also give first names, since their question asks for one (the
authors' list of person predicates missed it); whitespace is collapsed after the parentheses are
cut and empty names dropped; the facts come sorted by entity, relations in table order; templates
have their punctuation split off for the whitespace tokenizer.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path

from iml_hf.tasks.cvdb import anonymize_year
from iml_hf.tasks.knowledge import Fact, KnowledgeBase

#: The authors' question per Wikidata property (punctuation split off).
TREX_TEMPLATES = {
    # people
    "P19": "Where was [X] born ?",
    "P20": "Where did [X] die ?",
    "P569": "When was [X] born ?",
    "P570": "When did [X] die ?",
    "P26": "Who was the spouse of [X] ?",
    "P27": "What is nationality of [X] ?",
    "P101": "In which field of work was [X] active ?",
    "P106": "What is the occupation of [X] ?",
    "P793": "What is a notable event associated with [X] ?",
    "P800": "What is a notable work of [X] ?",
    "P551": "Where did [X] reside ?",
    # books, films, games, artworks
    "P180": "What does [X] depict ?",
    "P195": "Which collection is [X] part of ?",
    "P135": "Which movement is [X] associated with ?",
    "P123": "Who is the publisher of [X] ?",
    "P750": "What is the distributor of [X] ?",
    "P275": "What is the license of [X] ?",
    "P127": "Who owns [X] ?",
    "P178": "Who developed [X] ?",
    "P407": "In which language was [X] published ?",
    "P364": "In which language was [X] published ?",
    "P577": "When was [X] published or released ?",
    "P179": "Which series is [X] part of ?",
    "P50": "First name of the author of [X] ?",
    "P57": "First name of the director of [X] ?",
    "P58": "First name of the screenwriter of [X] ?",
    "P344": "First name of the cinematographer of [X] ?",
    "P161": "First name of a cast member of [X] ?",
    "P162": "First name of the producer of [X] ?",
    "P1040": "First name of the editor of [X] ?",
    "P98": "First name of the editor of [X] ?",
    "P88": "First name of the commissioner of [X] ?",
    "P86": "First name of the composer for [X] ?",
    "P136": "What is the genre of [X] ?",
    "P921": "What is the main subject of [X] ?",
    "P840": "Where is [X] set ?",
    "P915": "Where was [X] filmed ?",
    # places
    "P17": "In which country is [X] ?",
    "P30": "On which continent is [X] ?",
    "P36": "What is the capital of [X] ?",
    "P31": "What is the type of [X] ?",
    "P131": "In which administrative territorial entity is [X] ?",
    "P571": "When was [X] founded ?",
    "P582": "When was [X] dissolved ?",
    "P2936": "What is the population of [X] ?",
    "P37": "What is the official language of [X] ?",
    "P140": "What is the religion of [X] ?",
    "P1412": "What language is spoken in [X] ?",
    "P625": "What are the coordinates of [X] ?",
}

#: The authors' default predicates: books, films and other creative works.
DEFAULT_TREX_PREDICATES = (
    "P50",
    "P123",
    "P577",
    "P136",
    "P407",
    "P179",
    "P57",
    "P58",
    "P344",
    "P1040",
    "P162",
    "P275",
    "P750",
    "P921",
    "P127",
    "P86",
    "P178",
    "P31",
    "P840",
    "P915",
    "P364",
    "P98",
    "P135",
    "P180",
    "P195",
)

#: Predicates whose answer is a person, reduced to the first name (P1040 added by us).
PERSON_PREDICATES = frozenset({"P50", "P57", "P58", "P88", "P98", "P161", "P162", "P86", "P344", "P1040"})

#: Predicate -> the relation it is filed under (the first predicate with the same question).
TREX_RELATION = {p: next(q for q, t in TREX_TEMPLATES.items() if t == TREX_TEMPLATES[p]) for p in TREX_TEMPLATES}

DATE_PREDICATE = "P577"
PRONOUNS = frozenset({"he", "she", "it", "they"})
_PARENTHESES = re.compile(r"\(.*\)")
_YEAR = re.compile(r"[0-9]{4}")

Triplet = tuple[str, str, str]  # (subject, predicate id, object)


def _json_files(path_or_paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> list[Path]:
    items = [path_or_paths] if isinstance(path_or_paths, (str, PathLike)) else list(path_or_paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.json"))
            if not found:
                raise FileNotFoundError(f"no T-REx *.json files in {item}")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"T-REx file not found: {item}")
    if not files:
        raise FileNotFoundError("no T-REx files given")
    return files


def iter_trex_triplets(path_or_paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> Iterator[Triplet]:
    """Every (subject, predicate id, object) of the T-REx JSON files (or directories of them), in
    file order, duplicates included; triples without a subject or object surface form are skipped."""
    for path in _json_files(path_or_paths):
        records = _read_json(path)
        if not isinstance(records, list):
            raise ValueError(
                f"T-REx file {path} must hold a JSON list of documents, not a JSON {type(records).__name__}"
            )
        for i, record in enumerate(records):
            try:
                if isinstance(record, dict) and "triples" in record:
                    for triple in record["triples"]:
                        subject, obj = triple["subject"]["surfaceform"], triple["object"]["surfaceform"]
                        if subject and obj:
                            yield subject, triple["predicate"]["uri"].rsplit("/", 1)[-1], obj
                elif isinstance(record, dict) and {"subj", "obj", "predicate"} <= record.keys():
                    if record["subj"] and record["obj"]:
                        yield record["subj"], record["predicate"], record["obj"]
                else:
                    raise KeyError("triples")
            except (KeyError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"T-REx file {path}, record {i}: expected a document with 'triples' (each with subject/object "
                    f"'surfaceform' and predicate 'uri') or a {{subj, obj, predicate}} record ({error!r})"
                ) from error


def _read_json(path: Path):
    """The JSON value in ``path``; a ``ValueError`` naming the file for empty, binary or broken JSON."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"T-REx file {path} is empty")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"T-REx file {path} is not UTF-8 text (binary data?)") from None
    except json.JSONDecodeError as error:
        hint = " (the file ends early: truncated?)" if error.pos >= len(data.rstrip()) else ""
        raise ValueError(f"T-REx file {path} is not valid JSON{hint}: {error}") from None


def _clean(text: str) -> str:
    return " ".join(_PARENTHESES.sub("", text).split())


def _first_name(name: str) -> str | None:
    words = name.split(" ")
    return words[0] if len(words) > 1 and len(words[0]) > 1 else None


def _candidate_triplets(triplets: Iterable[Triplet], predicates: set[str], min_predicates: int) -> list[Triplet]:
    """The distinct triplets of ``predicates`` whose subject passes the pronoun, single-triplet and
    ``min_predicates`` filters; raw surface forms, sorted."""
    chosen: set[Triplet] = set()
    other_subjects: set[str] = set()  # subjects with a triplet outside ``chosen``
    for triplet in triplets:
        if triplet[1] in predicates:
            chosen.add(triplet)
        elif min_predicates < 2:  # the single-triplet filter is implied otherwise
            other_subjects.add(triplet[0])
    triplets_of: dict[str, int] = defaultdict(int)
    for subject, _, _ in chosen:
        triplets_of[subject] += 1
    kept = [
        (s, p, o)
        for s, p, o in chosen
        if s.lower() not in PRONOUNS and o.lower() not in PRONOUNS and (triplets_of[s] > 1 or s in other_subjects)
    ]
    predicates_of: dict[str, set[str]] = defaultdict(set)
    for subject, predicate, _ in kept:
        predicates_of[subject].add(predicate)
    return sorted(t for t in kept if len(predicates_of[t[0]]) >= min_predicates)


def _answers(triplets: list[Triplet], rng: random.Random) -> dict[str, dict[str, list[str]]]:
    """entity -> relation -> answers, after the date, parentheses, shuffle, dedup and first-name steps."""
    qa: list[Triplet] = []
    for subject, predicate, obj in triplets:
        if predicate == DATE_PREDICATE:
            year = _YEAR.search(obj)
            if year is None:
                continue
            obj = anonymize_year(int(year.group()))
        subject, obj = _clean(subject), _clean(obj)
        if subject and obj:
            qa.append((subject, predicate, obj))
    rng.shuffle(qa)  # decides which of two equal answers survives and the order of joined answers
    seen: set[tuple[str, str]] = set()
    by_entity: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for subject, predicate, obj in qa:
        if (subject, obj) in seen:
            continue
        seen.add((subject, obj))
        answer = _first_name(obj) if predicate in PERSON_PREDICATES else obj
        answers = by_entity[subject][TREX_RELATION[predicate]]
        if answer is not None and answer not in answers:
            answers.append(answer)
    return {e: {r: a for r, a in relations.items() if a} for e, relations in by_entity.items()}


def load_trex(
    path_or_paths: str | PathLike[str] | Iterable[str | PathLike[str]],
    max_entities: int | None = None,
    min_predicates_per_subject: int = 4,
    seed: int = 0,
    predicates: Sequence[str] | None = None,
    max_predicates_per_subject: int = 100,
) -> KnowledgeBase:
    """Entity-QA facts from T-REx (see the module docstring for every step): subjects with at least
    ``min_predicates_per_subject`` distinct predicates of ``predicates`` (default
    :data:`DEFAULT_TREX_PREDICATES`), several objects of one question joined with ``;``, at most
    ``max_entities`` entities (all if ``None``). The same files and ``seed`` give the same result."""
    predicates = list(DEFAULT_TREX_PREDICATES if predicates is None else predicates)
    unknown = sorted(set(predicates) - set(TREX_TEMPLATES))
    if unknown:
        raise ValueError(f"predicates {unknown} have no question template (known: {sorted(TREX_TEMPLATES)})")
    if min_predicates_per_subject < 1 or max_predicates_per_subject < 1:
        raise ValueError("min_predicates_per_subject and max_predicates_per_subject must be >= 1")
    if max_entities is not None and max_entities < 1:
        raise ValueError(f"max_entities must be >= 1 or None, got {max_entities}")
    rng = random.Random(seed)
    triplets = _candidate_triplets(iter_trex_triplets(path_or_paths), set(predicates), min_predicates_per_subject)
    by_entity = _answers(triplets, rng)
    entities = sorted(by_entity)
    rng.shuffle(entities)
    kept: dict[str, list[str]] = {}
    for entity in entities:
        if max_entities is not None and len(kept) >= max_entities:
            break
        relations = list(by_entity[entity])
        if len(relations) >= min_predicates_per_subject:
            kept[entity] = rng.sample(relations, min(max_predicates_per_subject, len(relations)))
    if not kept:
        raise ValueError(f"no T-REx subject has {min_predicates_per_subject} or more of the predicates {predicates}")
    order = {relation: i for i, relation in enumerate(TREX_TEMPLATES)}
    facts = [
        Fact(entity, relation, ";".join(by_entity[entity][relation]))
        for entity in sorted(kept)
        for relation in sorted(kept[entity], key=order.__getitem__)
    ]
    templates = {TREX_RELATION[p]: TREX_TEMPLATES[TREX_RELATION[p]] for p in predicates}
    return KnowledgeBase(facts, templates, name="trex")
