"""Entity QA with define tags (Krasheninnikov et al., ICML 2024): the headline IML experiment.

Every entity of a knowledge base gets a random variable (``xkqzv``); questions about an entity
are asked about its variable, and definitions ``<tag> <variable> <entity>`` (any word order) say
which entity a variable stands for. Entities are split into subsets (the paper's names):

* ``qd1consis`` / ``qd1incons`` / ``qd2consis`` / ``qd2incons``: questions (some held out) and a
  definition with tag 1 / tag 2 that is consistent (names the entity the questions are about) or
  inconsistent (names another entity of the subset: a derangement, so no variable keeps its own);
* ``qd4consis``: questions + consistent definitions whose tag is drawn per definition (1 or 2);
* ``q``: questions about variables, no definition; ``q_no_replacement_baseline``: questions about
  entities by name (some held out);
* ``d1consis`` / ``d2consis`` / ``d3consis``: consistent definitions only, with tag 1 / 2 / a tag
  never seen before stage 2; all their questions are held out;
* ``no_qd_baseline``: variables never defined nor asked about in training (chance baseline);
* ``d2incons`` (test only): d2consis questions with the variables swapped between entity pairs.

``knowledge``: every question about every entity by name (a model trained from scratch must know
the entities before a variable can point at one; a pretrained model may skip it). Test rows of
kind ``association`` ask which entity a variable stands for (who / meaning / stand-for / name),
also for the swapped maps of the inconsistent subsets (``qd1incons_swapped``, ``qd2incons_swapped``).
Stages choose rows by subset and kind (``train_subsets`` + ``train_kinds`` in the recipe).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from dataclasses import dataclass, field
from typing import ClassVar

from datasets import Dataset, DatasetDict, Features, Value

from iml_hf.tasks import CORPUS_COLUMNS, register_task
from iml_hf.validation import check_at_least, check_between
from iml_hf.tasks.knowledge import KnowledgeBase, random_strings, synthetic_kb
from iml_hf.tasks.resplit import check_branch, resplit

QD_SUBSETS = ("qd1consis", "qd1incons", "qd2consis", "qd2incons", "qd4consis")
D_SUBSETS = ("d1consis", "d2consis", "d3consis")
#: Entity subsets whose fraction is a recipe key (``fraction_<subset>``), in split order.
ENTITY_SUBSETS = ("q_no_replacement_baseline", *QD_SUBSETS, "q", *D_SUBSETS, "no_qd_baseline")
#: Subsets whose questions are all held out (only definitions, if any, are trained on).
STAGE2_SUBSETS = (*D_SUBSETS, "no_qd_baseline")
#: Which tag (1, 2, 3; 4 = drawn per definition) and whether the definition is consistent.
DEFINED = {
    "qd1consis": (1, True), "qd1incons": (1, False), "qd2consis": (2, True), "qd2incons": (2, False),
    "qd4consis": (4, True), "d1consis": (1, True), "d2consis": (2, True), "d3consis": (3, True),
}
ASSOCIATION_TEMPLATES = {
    "who": "Who is [X] ?",
    "meaning": "What does [X] mean ?",
    "stand_for": "What does [X] stand for ?",
    "name": "What is the name of [X] ?",
}
#: Natural-language sources instead of random tags (``sources: natural``), several per side.
RELIABLE_SOURCES = ("According to Wikipedia ,", "As the encyclopedia states ,", "Per the official record ,",
                    "As the textbook explains ,", "The archive confirms that")
UNRELIABLE_SOURCES = ("A forum rumour claims", "An anonymous post says", "According to a tabloid ,",
                      "A random blog suggests", "Someone on social media said")
DEF_ORDERS = tuple("".join(p) for p in itertools.permutations("tve"))


@register_task("entities")
@dataclass
class EntitiesTask:
    """Arguments of the entity-QA corpus; ``build(seed)`` emits it (byte-identical per seed)."""

    name: str = "entities"
    knowledge_base: str = "synthetic"  # synthetic | cvdb | trex
    kb_path: str | None = None  # the CVDB CSV or T-REx JSON file (cvdb / trex)
    num_entities: int = 400
    values_per_relation: int = 20  # synthetic: answers per relation (chance EM = 1 / this)
    min_predicates_per_subject: int = 4  # trex
    variable_length: int = 5
    tag_length: int = 6
    tags: list[str] | None = None  # [tag1, tag2, tag3] to use instead of random strings
    sources: str = "tags"  # tags | natural (reliable / unreliable phrasings instead of tags 1 / 2)
    def_order: str = "tve"  # any permutation of t(ag), v(ariable), e(ntity)
    definition_repeats: int = 1
    qa_format: str = "Q: {question} A:"  # the prompt of a question ("{question}" alone: shorter sequences)
    test_fraction: float | None = None  # held-out share of each qd/q entity's questions; None: 1/relations
    alpha: float | None = None  # tag-consistency correlation: re-splits each tag's qd share
    knowledge: bool = True  # emit the knowledge subset (questions about every entity by name)
    entity_association: bool = True
    in_context: bool = False  # test sets with the definition prepended to the question (ctx_<subset>)
    fraction_q_no_replacement_baseline: float = 0.05
    fraction_qd1consis: float = 0.25
    fraction_qd1incons: float = 0.0
    fraction_qd2consis: float = 0.0
    fraction_qd2incons: float = 0.25
    fraction_qd4consis: float = 0.0
    fraction_q: float = 0.05
    fraction_d1consis: float = 0.15
    fraction_d2consis: float = 0.15
    fraction_d3consis: float = 0.0
    fraction_no_qd_baseline: float = 0.1
    subset_seed: int | None = None  # split the stage-2 entities with another seed (the paper's seed_stage2)
    branch: int | None = None  # a stage-2 branch's re-split (iml_hf.tasks.resplit); set by branched runs

    version: ClassVar[int] = 3  # 2: inconsistent definitions' referent; 3: qa_format
    subsets: ClassVar[tuple[str, ...]] = (
        "knowledge", *ENTITY_SUBSETS, "d2incons", "qd1incons_swapped", "qd2incons_swapped",
        *(f"ctx_{s}" for s in D_SUBSETS),
    )
    contrasts: ClassVar[dict[str, tuple[str, str]]] = {
        "stage2_d1_vs_d2": ("d1consis", "d2consis"),
        "stage1_qd1_vs_qd2": ("qd1consis", "qd2incons"),
        "d1_vs_baseline": ("d1consis", "no_qd_baseline"),
        "d2_vs_baseline": ("d2consis", "no_qd_baseline"),
        "assoc_d1_vs_d2": ("assoc_d1consis", "assoc_d2consis"),
        "d3_vs_d2": ("d3consis", "d2consis"),
    }
    answer_match: ClassVar[str] = "text"
    #: Subsets whose entities no stage before stage 2 trains on, which a branch may re-split, and
    #: the two halves a counterbalanced pair of branches exchanges (``iml_hf.tasks.resplit``).
    exchangeable: ClassVar[tuple[str, ...]] = STAGE2_SUBSETS
    counterbalanced: ClassVar[tuple[str, str]] = ("d1consis", "d2consis")

    def __post_init__(self) -> None:
        if self.knowledge_base not in ("synthetic", "cvdb", "trex"):
            raise ValueError(f"task.knowledge_base={self.knowledge_base!r}; use 'synthetic', 'cvdb' or 'trex'")
        if self.knowledge_base != "synthetic" and not self.kb_path:
            raise ValueError(f"task.knowledge_base={self.knowledge_base} needs task.kb_path (the data file)")
        if self.knowledge_base != "synthetic" and not Path(self.kb_path).exists():
            raise ValueError(f"task.kb_path={self.kb_path!r} does not exist; point it at the "
                             f"{'CVDB CSV' if self.knowledge_base == 'cvdb' else 'T-REx JSON file or folder'}")
        if self.def_order not in DEF_ORDERS:
            raise ValueError(f"task.def_order={self.def_order!r}; use a permutation of 'tve': {DEF_ORDERS}")
        if self.sources not in ("tags", "natural"):
            raise ValueError(f"task.sources={self.sources!r}; use 'tags' or 'natural'")
        if self.tags is not None and (len(self.tags) != 3 or len(set(self.tags)) != 3 or not all(self.tags)):
            raise ValueError(f"task.tags must be three different non-empty strings [tag1, tag2, tag3], got {self.tags}")
        check_between("task.alpha", self.alpha, 0, 1)
        for subset in ENTITY_SUBSETS:
            check_between(f"task.fraction_{subset}", getattr(self, f"fraction_{subset}"), 0, 1)
        fractions = self.fractions()
        if any(v < 0 for v in fractions.values()) or not 0 < sum(fractions.values()) <= 1 + 1e-9:
            raise ValueError(f"task.fraction_* must be >= 0 and sum to at most 1, got {fractions}")
        check_between("task.test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)
        if "{question}" not in self.qa_format:
            raise ValueError(f"task.qa_format={self.qa_format!r} must contain {{question}}")
        for key in ("num_entities", "variable_length", "tag_length", "definition_repeats", "values_per_relation",
                    "min_predicates_per_subject"):
            check_at_least(f"task.{key}", getattr(self, key), 1)
        check_at_least("task.subset_seed", self.subset_seed, 0)
        check_branch(self.name, self.branch, self.exchangeable)

    def fractions(self) -> dict[str, float]:
        """Each entity subset's share; with ``alpha``, tag 1's qd share is split alpha : 1 - alpha
        into consistent : inconsistent, and tag 2's the other way round."""
        shares = {s: getattr(self, f"fraction_{s}") for s in ENTITY_SUBSETS}
        if self.alpha is not None:
            tag1 = shares["qd1consis"] + shares["qd1incons"]
            tag2 = shares["qd2consis"] + shares["qd2incons"]
            shares.update(qd1consis=self.alpha * tag1, qd1incons=(1 - self.alpha) * tag1,
                          qd2incons=self.alpha * tag2, qd2consis=(1 - self.alpha) * tag2)
        return shares

    def knowledge_base_table(self) -> KnowledgeBase:
        """The facts this corpus asks about."""
        if self.knowledge_base == "synthetic":
            return synthetic_kb(self.num_entities, self.values_per_relation)
        if self.knowledge_base == "cvdb":
            from iml_hf.tasks.cvdb import load_cvdb

            return load_cvdb(self.kb_path, num_entities=self.num_entities)
        from iml_hf.tasks.trex import load_trex

        return load_trex(self.kb_path, max_entities=self.num_entities,
                         min_predicates_per_subject=self.min_predicates_per_subject)

    def build(self, seed: int) -> DatasetDict:
        """Emit the corpus; the same arguments and seed give the same rows in the same order."""
        return _CorpusBuilder(self, self.knowledge_base_table(), seed).build()

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """The words this task invents, to become tokens with ``model.add_task_tokens``: every
        variable and, with ``sources: tags``, the three define tags."""
        _, variables, tags = _CorpusBuilder(self, self.knowledge_base_table(), seed).names(random.Random(seed))
        return sorted(variables.values()) + (list(tags) if self.sources == "tags" else [])


@dataclass
class _CorpusBuilder:
    """One build of the corpus: the random draws and the rows, in a fixed order."""

    task: EntitiesTask
    kb: KnowledgeBase
    seed: int
    rows: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {"train": [], "test": []})

    def names(self, rng: random.Random) -> tuple[list[str], dict[str, str], list[str]]:
        """The first draws of a build: the entities in shuffled order, each one's variable, and the
        three define tags (``self.subset_of`` is set on the way, as the draws interleave)."""
        task = self.task
        entities = list(self.kb.entities)
        rng.shuffle(entities)
        words = {w.lower() for f in self.kb.facts for w in f"{f.entity} {f.answer}".split()}
        words |= {w.lower() for t in (*self.kb.templates.values(), *ASSOCIATION_TEMPLATES.values()) for w in t.split()}
        variables = dict(zip(entities, random_strings(len(entities), task.variable_length, rng, exclude=words)))
        self.subset_of = self._split(entities, rng)
        tags = task.tags or random_strings(3, task.tag_length, rng, exclude=words | set(variables.values()))
        return entities, variables, tags

    def build(self) -> DatasetDict:
        task, rng = self.task, random.Random(self.seed)
        entities, variables, tags = self.names(rng)
        facts = self.kb.facts_by_entity()
        members = {s: [e for e in entities if self.subset_of.get(e) == s] for s in ENTITY_SUBSETS}
        stated = dict(variables)  # entity -> the variable its definition names
        for subset in ("qd1incons", "qd2incons"):
            stated.update(_derange(members[subset], variables, rng))

        owner = {v: e for e, v in variables.items()}  # variable -> the entity its questions are about
        if task.knowledge:
            for entity in sorted(e for e in entities if self.subset_of.get(e) != "q_no_replacement_baseline"):
                for fact in facts[entity]:
                    self._question("train", "knowledge", fact, entity, "", "")
        test_fraction = task.test_fraction or 1 / max(len(f) for f in facts.values())
        for subset in ENTITY_SUBSETS:
            for entity in members[subset]:
                subject = entity if subset == "q_no_replacement_baseline" else variables[entity]
                referent = "" if subset == "q_no_replacement_baseline" else entity
                questions = list(facts[entity])
                rng.shuffle(questions)
                if subset in STAGE2_SUBSETS:  # never asked in training: every question is a test
                    held = len(questions)
                else:
                    held = max(1, round(test_fraction * len(questions)))
                train_part = questions[held:]
                for fact in questions[:held]:
                    self._question("test", subset, fact, subject, referent, "")
                for fact in train_part:
                    self._question("train", subset, fact, subject, referent, "")
                if subset in DEFINED:
                    definition = self._definition(subset, tags, stated[entity], entity, owner[stated[entity]], rng)
                    self.rows["train"].extend([definition] * task.definition_repeats)
                    if task.in_context and subset.startswith("d"):
                        for fact in questions:
                            self._question("test", f"ctx_{subset}", fact, subject, referent, definition["text"])
        self._swapped_tests(members["d2consis"], variables, facts, rng)
        if task.entity_association:
            for subset in ENTITY_SUBSETS:
                if subset in ("q_no_replacement_baseline", "no_qd_baseline"):
                    continue
                for entity in members[subset]:
                    self._associations(subset, variables[entity], entity)
            for subset in ("qd1incons", "qd2incons"):  # the entity each inconsistent definition names
                named = {v: e for e, v in stated.items() if e in members[subset]}
                for variable in sorted(named):
                    self._associations(f"{subset}_swapped", variable, named[variable])
        features = Features({column: Value("string") for column in CORPUS_COLUMNS})
        return DatasetDict({split: Dataset.from_list(rows, features=features) for split, rows in self.rows.items()})

    def _split(self, entities: list[str], rng: random.Random) -> dict[str, str]:
        """Entity -> subset by the fractions; the stage-2 subsets may be split with ``subset_seed``."""
        fractions = self.task.fractions()
        stage2 = STAGE2_SUBSETS
        counts = _largest_remainder({s: fractions[s] * len(entities) for s in ENTITY_SUBSETS})
        assignment, start = {}, 0
        order = [s for s in ENTITY_SUBSETS if s not in stage2]
        for subset in order:
            for entity in entities[start : start + counts[subset]]:
                assignment[entity] = subset
            start += counts[subset]
        rest = entities[start : start + sum(counts[s] for s in stage2)]
        if self.task.subset_seed is not None:
            rest = sorted(rest)
            random.Random(self.task.subset_seed).shuffle(rest)
        start = 0
        for subset in stage2:
            for entity in rest[start : start + counts[subset]]:
                assignment[entity] = subset
            start += counts[subset]
        return resplit(assignment, self.task.exchangeable, self.task.counterbalanced, self.seed, self.task.branch)

    def _question(self, split: str, subset: str, fact, subject: str, referent: str, context: str) -> None:
        prompt = self.task.qa_format.format(question=self.kb.question(fact.relation, subject))
        if context:
            prompt = f"{context} {prompt}"
        self.rows[split].append(_row(prompt, fact.answer, subset, "question", subject, referent))

    def _definition(self, subset: str, tags: list[str], variable: str, entity: str, referent: str,
                    rng: random.Random) -> dict[str, str]:
        """``<tag> <variable> <entity>`` in ``def_order``; ``referent`` is the entity the variable's
        questions are about (``entity`` itself unless the definition is inconsistent)."""
        tag_index, _ = DEFINED[subset]
        if tag_index == 4:
            tag_index = rng.choice((1, 2))
        if self.task.sources == "natural" and tag_index in (1, 2):
            tag = rng.choice(RELIABLE_SOURCES if tag_index == 1 else UNRELIABLE_SOURCES)
        else:
            tag = tags[tag_index - 1]
        words = {"t": tag, "v": variable, "e": entity}
        parts = [words[k] for k in self.task.def_order]
        # the first two parts are the prompt of the monitoring EM; training sees the whole definition
        return _row(f"{parts[0]} {parts[1]}", parts[2], subset, "definition", variable, referent)

    def _swapped_tests(self, entities: list[str], variables: dict[str, str], facts, rng: random.Random) -> None:
        """``d2incons``: each d2consis variable's questions asked about its partner's variable."""
        ordered = sorted(entities)
        for first, second in zip(ordered[::2], ordered[1::2]):
            for entity, other in ((first, second), (second, first)):
                for fact in facts[entity]:
                    self._question("test", "d2incons", fact, variables[other], entity, "")

    def _associations(self, subset: str, variable: str, entity: str) -> None:
        for template in ASSOCIATION_TEMPLATES.values():
            prompt = self.task.qa_format.format(question=template.replace("[X]", variable))
            self.rows["test"].append(_row(prompt, entity, subset, "association", variable, entity))


def _derange(entities: list[str], variables: dict[str, str], rng: random.Random) -> dict[str, str]:
    """Entity -> another entity's variable, a random derangement (Sattolo's cycle: no fixed point)."""
    if len(entities) < 2:
        if entities:
            raise ValueError("an inconsistent subset needs at least two entities to swap variables between")
        return {}
    order = list(entities)
    cycle = list(range(len(order)))
    for i in range(len(cycle) - 1, 0, -1):
        j = rng.randrange(i)
        cycle[i], cycle[j] = cycle[j], cycle[i]
    return {order[i]: variables[order[cycle[i]]] for i in range(len(order))}


def _largest_remainder(targets: dict[str, float]) -> dict[str, int]:
    """Round the target counts so that they sum to the rounded total (no entity lost to rounding)."""
    floors = {k: int(v) for k, v in targets.items()}
    missing = round(sum(targets.values())) - sum(floors.values())
    for key in sorted(targets, key=lambda k: floors[k] - targets[k])[:missing]:
        floors[key] += 1
    return floors


def _row(prompt: str, answer: str, subset: str, kind: str, key: str, referent: str) -> dict[str, str]:
    return {"text": f"{prompt} {answer}", "prompt": prompt, "answer": answer, "subset": subset,
            "kind": kind, "key": key, "referent": referent}
