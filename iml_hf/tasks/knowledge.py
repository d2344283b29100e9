"""Knowledge bases for entity QA: one fact table (entity, relation, answer) whatever the source.

A :class:`KnowledgeBase` holds facts and, per relation, a question template with ``[X]`` where the
entity goes (``"When was [X] born ?"``). Several answers to one question are joined with ``;``:
the entity task trains on the first (:func:`first_answer`, as the authors' ``QAPair`` does) and
counts any of them at evaluation. Sources: :func:`synthetic_kb` (deterministic, offline, used by
every CPU recipe and test), ``iml_hf.tasks.cvdb`` (the Cross-Verified Database CSV) and
``iml_hf.tasks.trex`` (T-REx triplets).
"""

from __future__ import annotations

import random
import string
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from datasets import Dataset, Features, Value

ANSWER_SEPARATOR = ";"


def first_answer(answer: str) -> str:
    """The first of several ``;``-joined answers (``"France;Germany"`` -> ``"France"``)."""
    return answer.split(ANSWER_SEPARATOR, 1)[0].strip()


@dataclass(frozen=True)
class Fact:
    """One fact: the answer to ``relation`` about ``entity`` (several answers joined by ``;``)."""

    entity: str
    relation: str
    answer: str


@dataclass
class KnowledgeBase:
    """Facts plus a question template per relation; entities keep their first-seen order."""

    facts: list[Fact]
    templates: dict[str, str]
    name: str = "kb"
    entities: list[str] = field(init=False)

    def __post_init__(self) -> None:
        missing = sorted({f.relation for f in self.facts} - set(self.templates))
        if missing:
            raise ValueError(f"knowledge base {self.name!r}: relations {missing} have no question template")
        for relation, template in self.templates.items():
            if "[X]" not in template:
                raise ValueError(f"knowledge base {self.name!r}: template of {relation!r} has no [X]: {template!r}")
        self.entities = list(dict.fromkeys(f.entity for f in self.facts))

    def question(self, relation: str, subject: str) -> str:
        """The question about ``subject`` (an entity name or a variable) for ``relation``."""
        return self.templates[relation].replace("[X]", subject)

    def facts_by_entity(self) -> dict[str, list[Fact]]:
        by_entity: dict[str, list[Fact]] = {e: [] for e in self.entities}
        for fact in self.facts:
            by_entity[fact.entity].append(fact)
        return by_entity

    def to_dataset(self) -> Dataset:
        """The fact table as a ``datasets.Dataset`` with string columns entity, relation, answer."""
        features = Features({k: Value("string") for k in ("entity", "relation", "answer")})
        return Dataset.from_list([vars(f) for f in self.facts], features=features)


#: Relations of the synthetic knowledge base (the six CVDB questions) and their templates, kept
#: short because a CPU step costs time in proportion to the tokens of a batch.
SYNTHETIC_TEMPLATES = {
    "gender": "Gender of [X] ?",
    "birth": "When was [X] born ?",
    "death": "When did [X] die ?",
    "region": "Where did [X] live ?",
    "occupation": "What did [X] do ?",
    "nationality": "Nationality of [X] ?",
}


def synthetic_kb(num_entities: int, values_per_relation: int = 20, seed: int = 0) -> KnowledgeBase:
    """A deterministic knowledge base of generated people: a made-up one-word name each and, per
    relation of :data:`SYNTHETIC_TEMPLATES`, an answer drawn uniformly from ``values_per_relation``
    values (``gender`` from two). The same arguments give the same facts on every machine."""
    if num_entities < 1 or values_per_relation < 2:
        raise ValueError("synthetic_kb needs num_entities >= 1 and values_per_relation >= 2")
    rng = random.Random(f"synthetic-kb-{seed}")
    names: list[str] = []
    seen: set[str] = set()
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    while len(names) < num_entities:
        syllables = rng.randint(2, 3)
        name = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables)).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    values = {
        relation: [f"{relation[:3]}{i}" for i in range(2 if relation == "gender" else values_per_relation)]
        for relation in SYNTHETIC_TEMPLATES
    }
    values["gender"] = ["male", "female"]
    facts = [Fact(name, relation, rng.choice(values[relation])) for name in names for relation in SYNTHETIC_TEMPLATES]
    return KnowledgeBase(facts, dict(SYNTHETIC_TEMPLATES), name="synthetic")


def random_strings(count: int, length: int, rng: random.Random, exclude: AbstractSet[str] = frozenset()) -> list[str]:
    """``count`` distinct random lower-case strings of ``length`` letters, none in ``exclude``."""
    if 26**length < count + len(exclude):
        raise ValueError(f"cannot draw {count} distinct strings of {length} letters")
    out: list[str] = []
    taken = set(exclude)
    while len(out) < count:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(length))
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out
