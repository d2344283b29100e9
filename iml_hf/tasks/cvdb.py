"""The Cross-Verified Database (CVDB) of notable people as a :class:`KnowledgeBase`.

Krasheninnikov et al. (ICML 2024) ask six questions about each of the most-read people of the
CVDB (Laouenan et al. 2022): gender, birth, death, region, occupation and nationality. This
module reads the CVDB CSV (latin-1) and returns those facts with one question template per
relation, so the entity-QA task can be built from the real people instead of
:func:`iml_hf.tasks.knowledge.synthetic_kb`.

Following the authors' data code (``data_generation/cvdb_data.py`` of
``krasheninnikov/internalization``; re-implemented here, not copied):

* columns used: name, birth, death, gender, level3_main_occ, string_citizenship_raw_d, un_region,
  wiki_readers_2015_2018; a row missing any of them is dropped, then repeated names keep their
  first row;
* people whose name has a character other than letters, digits, ``_`` and whitespace are dropped;
  so are those whose occupation (underscores made spaces) has one, and those whose citizenship has
  one other than ``'`` (the list quoting);
* the top ``num_entities // 2`` men (gender ``Male``) and ``num_entities // 2`` women (``Female``)
  by ``wiki_readers_2015_2018``, men first; with ``equalize_gender=False`` the top ``num_entities``
  of everyone (other genders included);
* years as :func:`anonymize_year` writes them: a century up to 1900 (``1873 -> "19 century"``,
  ``-450 -> "5 century BC"``), a decade from 1901 to 1999 (``1953 -> "1950s"``), the year itself
  from 2000 on; the same for birth and death;
* names and occupations with underscores made spaces; the citizenship list
  (``'United_Kingdom'_'Ireland'``) becomes ``United Kingdom;Ireland``; gender and region as given.

Our choices where the authors' code is silent or differs by accident:

* question templates are the authors' wording with punctuation split off for the whitespace
  tokenizer, and the occupation relation is named ``occupation`` (their ``What did [X] do ?``);
* regular expressions run on Python strings (Unicode ``\\w``, as in the authors' pandas of the
  time), so accented names such as ``Émile_Zola`` are kept;
* ties in readership keep file order (a stable sort; the authors' sort was not stable);
* a birth/death that is not a number drops the person (the authors' code would stop); a
  nationality list is stripped of empty and repeated entries, and names are deduplicated after
  the underscores are made spaces, so no two entities share a name;
* fewer than ``num_entities // 2`` people of a gender yields fewer entities, as in the authors'
  code; check ``len(kb.entities)`` if the count matters.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from iml_hf.tasks.knowledge import Fact, KnowledgeBase

#: Columns of the CVDB CSV the loader reads.
CVDB_COLUMNS = (
    "name",
    "birth",
    "death",
    "gender",
    "level3_main_occ",
    "string_citizenship_raw_d",
    "un_region",
    "wiki_readers_2015_2018",
)

#: The six relations and their questions (the authors' wording, punctuation split off).
CVDB_TEMPLATES = {
    "gender": "What was the gender of [X] ?",
    "birth": "When was [X] born ?",
    "death": "When did [X] die ?",
    "region": "In which region did [X] live ?",
    "occupation": "What did [X] do ?",
    "nationality": "What was the nationality of [X] ?",
}

CVDB_ENCODING = "ISO-8859-1"

_ILLEGAL = re.compile(r"[^\w\s]")  # anything but letters, digits, underscore, whitespace
_ILLEGAL_CITIZENSHIP = re.compile(r"[^\w\s']")


def anonymize_year(year: int) -> str:
    """The authors' coarse year: a century up to 1900, a decade in 1901-1999, else the year."""
    if year <= 1900:
        text = f"{(abs(year) + 99) // 100} century"
        return text + " BC" if year < 0 else text
    if year < 2000:
        return f"{year // 10 * 10}s"
    return str(year)


def parse_citizenship(raw: str) -> str:
    """``'United_Kingdom'_'Ireland'`` -> ``United Kingdom;Ireland`` (empty and repeated entries left out)."""
    parts = (part.replace("'", "").replace("_", " ").strip() for part in raw.split("'_'"))
    return ";".join(dict.fromkeys(p for p in parts if p))


def _year(value: str) -> int | None:
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def _check_csv_text(path: Path) -> None:
    """A ``ValueError`` for a file that cannot be the CVDB CSV: empty, binary or JSON."""
    with path.open("rb") as handle:
        start = handle.read(4096)
    if not start.strip():
        raise ValueError(f"CVDB CSV {path} is empty")
    if b"\x00" in start or any(byte < 32 and byte not in b"\t\r\n" for byte in start.split(b"\n", 1)[0]):
        raise ValueError(f"CVDB CSV {path} is not a text file (its first bytes are binary data)")
    if start.lstrip()[:1] in (b"[", b"{"):
        raise ValueError(f"CVDB CSV {path} looks like JSON, not a comma-separated table")


def read_cvdb_table(path: str | PathLike[str]) -> pd.DataFrame:
    """The CVDB columns of :data:`CVDB_COLUMNS` as strings (readership as a number), rows with a
    missing value dropped. Raises ``FileNotFoundError`` / ``ValueError`` naming what is wrong (an
    empty, binary or JSON file, a malformed CSV, missing columns)."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"CVDB CSV {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"CVDB CSV not found: {path}")
    _check_csv_text(path)
    try:
        header = pd.read_csv(path, encoding=CVDB_ENCODING, nrows=0).columns
        missing = [c for c in CVDB_COLUMNS if c not in header]
        if missing:
            shown = [str(c)[:40] for c in header[:12]]
            more = f" and {len(header) - 12} more" if len(header) > 12 else ""
            raise ValueError(f"CVDB CSV {path} lacks the columns {missing} (its header has {shown}{more})")
        table = pd.read_csv(path, encoding=CVDB_ENCODING, usecols=list(CVDB_COLUMNS), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"CVDB CSV {path} is not a well-formed CSV file: {str(error).strip()}") from None
    table["wiki_readers_2015_2018"] = pd.to_numeric(table["wiki_readers_2015_2018"], errors="coerce")
    return table[list(CVDB_COLUMNS)].dropna().drop_duplicates(subset=["name"])


def _clean_people(table: pd.DataFrame) -> list[dict]:
    """Rows that pass the authors' character filters, values converted; file order kept."""
    people = []
    for row in table.to_dict("records"):
        occupation = row["level3_main_occ"].replace("_", " ")
        birth, death = _year(row["birth"]), _year(row["death"])
        if (
            _ILLEGAL.search(row["name"])
            or _ILLEGAL.search(occupation)
            or _ILLEGAL_CITIZENSHIP.search(row["string_citizenship_raw_d"])
            or birth is None
            or death is None
        ):
            continue
        nationality = parse_citizenship(row["string_citizenship_raw_d"])
        if not nationality:
            continue
        people.append(
            {
                "name": " ".join(row["name"].replace("_", " ").split()),
                "readers": float(row["wiki_readers_2015_2018"]),
                "gender": row["gender"],
                "birth": anonymize_year(birth),
                "death": anonymize_year(death),
                "region": row["un_region"],
                "occupation": occupation,
                "nationality": nationality,
            }
        )
    return people


def _most_read(people: list[dict], count: int) -> list[dict]:
    return sorted(people, key=lambda p: -p["readers"])[:count]  # stable: ties keep file order


def load_cvdb(path: str | PathLike[str], num_entities: int = 4000, equalize_gender: bool = True) -> KnowledgeBase:
    """The six CVDB facts about the most-read people of the CSV at ``path`` (see the module
    docstring for every filter). With ``equalize_gender`` (the paper's setting): the
    ``num_entities // 2`` most-read men, then the ``num_entities // 2`` most-read women, each in
    decreasing readership. People lacking any of the six facts (or a readership) are dropped before
    the selection. Deterministic: the same file gives the same knowledge base."""
    if num_entities < (2 if equalize_gender else 1):
        raise ValueError(f"load_cvdb needs num_entities >= {2 if equalize_gender else 1}, got {num_entities}")
    people, seen = [], set()
    for person in _clean_people(read_cvdb_table(path)):
        if person["name"] not in seen:
            seen.add(person["name"])
            people.append(person)
    if equalize_gender:
        chosen = [
            person
            for gender in ("Male", "Female")
            for person in _most_read([p for p in people if p["gender"] == gender], num_entities // 2)
        ]
    else:
        chosen = _most_read(people, num_entities)
    facts = [Fact(p["name"], relation, p[relation]) for p in chosen for relation in CVDB_TEMPLATES]
    return KnowledgeBase(facts, dict(CVDB_TEMPLATES), name="cvdb")
