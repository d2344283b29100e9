"""Entity QA with define tags (Krasheninnikov et al., ICML 2024): the headline IML experiment.

Every entity of a knowledge base gets a random variable (``xkqzv``); questions about an entity
are asked about its variable, and definitions ``<tag> <variable> <entity>`` (any word order) say
which entity a variable stands for. Entities are split into subsets (the paper's names):

* ``qd1consis`` / ``qd1incons`` / ``qd2consis`` / ``qd2incons``: questions (some held out) and a
  definition with tag 1 / tag 2 that is consistent (names the entity the questions are about) or
  inconsistent (names another entity of the subset: a derangement, so no variable keeps its own);
* ``qd4consis``: questions + consistent definitions, each with a tag of its own: a fresh random
  string used by no other definition (the authors' "random tags");
* ``q``: questions about variables, no definition; ``q_no_replacement_baseline``: questions about
  entities by name (some held out);
* ``d1consis`` / ``d2consis`` / ``d3consis``: consistent definitions only, with tag 1 / 2 / a tag
  never seen before stage 2; all their questions are held out;
* ``no_qd_baseline``: variables never defined nor asked about in training (chance baseline);
* ``d2incons`` (test only): d2consis questions with the variables swapped between entity pairs.

``knowledge``: every question about every entity by name (a model trained from scratch must know
the entities before a variable can point at one; a pretrained model may skip it). Test rows of
kind ``association`` ask which entity a variable stands for, one evaluation set per phrasing and
subset (``assoc_who_d1consis``, ``assoc_meaning_d1consis``, ``assoc_stand_for_d1consis``,
``assoc_name_d1consis``; with ``letter_sets`` also the first / second / last letter of the name),
also for the swapped maps of the inconsistent subsets (``qd1incons_swapped``, ``qd2incons_swapped``).
A fact with several answers (``a;b``) is trained on its first answer; a held-out question keeps
the list, and any of its answers counts. Stages choose rows by subset and kind (``train_subsets`` +
``train_kinds`` in the recipe).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from datasets import Dataset, DatasetDict, Features, Value

from iml_hf.config.validation import RecipeError, check_at_least, check_between
from iml_hf.tasks import ASSOCIATION_PROMPTS, CORPUS_COLUMNS, corpus_row, register_task
from iml_hf.tasks.knowledge import KnowledgeBase, first_answer, random_strings, synthetic_kb
from iml_hf.tasks.resplit import check_branch, resplit
from iml_hf.tasks.subsets import SubsetMeaning, largest_remainder, of_stage

#: Every subset, in display order: its definitions' tag and consistency, its stage, what it holds.
MEANINGS = {
    "knowledge": SubsetMeaning(
        "every question about every entity by name (training only), so that a model trained "
        "from scratch knows the entities a variable can point at",
        stage="base",
    ),
    "q_no_replacement_baseline": SubsetMeaning(
        "questions about entities by name (no variable), some held out", stage="1"
    ),
    "qd1consis": SubsetMeaning(
        "questions about variables plus a tag-1 definition naming the right entity; some questions held out",
        tag=1,
        consistent=True,
        stage="1",
    ),
    "qd1incons": SubsetMeaning(
        "questions about variables plus a tag-1 definition naming another entity of the subset; "
        "some questions held out",
        tag=1,
        consistent=False,
        stage="1",
    ),
    "qd2consis": SubsetMeaning(
        "questions about variables plus a tag-2 definition naming the right entity; some questions held out",
        tag=2,
        consistent=True,
        stage="1",
    ),
    "qd2incons": SubsetMeaning(
        "questions about variables plus a tag-2 definition naming another entity of the subset; "
        "some questions held out",
        tag=2,
        consistent=False,
        stage="1",
    ),
    "qd4consis": SubsetMeaning(  # the authors' "random tags": a fresh random string per definition
        "questions about variables plus consistent definitions whose tag (1 or 2) is drawn per "
        "definition; some questions held out",
        consistent=True,
        stage="1",
    ),
    "q": SubsetMeaning("questions about variables that are never defined; some held out", stage="1"),
    "d1consis": SubsetMeaning(
        "consistent tag-1 definitions only; every question is held out", tag=1, consistent=True, stage="2"
    ),
    "d2consis": SubsetMeaning(
        "consistent tag-2 definitions only; every question is held out", tag=2, consistent=True, stage="2"
    ),
    "d3consis": SubsetMeaning(
        "consistent definitions with a third tag, unseen before stage 2; every question is held out",
        tag=3,
        consistent=True,
        stage="2",
    ),
    "no_qd_baseline": SubsetMeaning(
        "variables neither defined nor asked about in training (chance baseline); every question is held out",
        stage="2",
    ),
    "d2incons": SubsetMeaning(
        "test only: d2consis questions asked about the variable of the partner entity (swapped pairs)"
    ),
    "qd1incons_swapped": SubsetMeaning(
        "test only: association questions for the entity each qd1incons definition names"
    ),
    "qd2incons_swapped": SubsetMeaning(
        "test only: association questions for the entity each qd2incons definition names"
    ),
    "ctx_d1consis": SubsetMeaning("test only (in_context): d1consis questions with their definition prepended"),
    "ctx_d2consis": SubsetMeaning("test only (in_context): d2consis questions with their definition prepended"),
    "ctx_d3consis": SubsetMeaning("test only (in_context): d3consis questions with their definition prepended"),
}
#: Entity subsets whose fraction is a recipe key (``fraction_<subset>``), in split order.
ENTITY_SUBSETS = of_stage(MEANINGS, "1", "2")
#: Subsets whose questions are all held out (only definitions, if any, are trained on).
STAGE2_SUBSETS = of_stage(MEANINGS, "2")
QD_SUBSETS = tuple(s for s in of_stage(MEANINGS, "1") if MEANINGS[s].defined)
D_SUBSETS = tuple(s for s in STAGE2_SUBSETS if MEANINGS[s].defined)
#: The entity-association questions (the authors' four phrasings, punctuation split off); the
#: answer is the entity's name. Each phrasing is an evaluation set of its own per subset.
ASSOCIATION_TEMPLATES = {
    "who": "Who is [X] ?",
    "meaning": "What does [X] mean ?",
    "stand_for": "What does [X] stand for ?",
    "name": "What is the name of [X] ?",
}
#: The authors' "letter" test sets (``letter_sets: true``): a letter of the entity's name, the
#: answer being that letter (letters and digits only, spaces and punctuation skipped: ours).
LETTER_TEMPLATES = {
    "first_letter": ("Which letter does the name of [X] start with ?", 0),
    "second_letter": ("What is the second letter in the name of [X] ?", 1),
    "last_letter": ("What is the last letter in the name of [X] ?", -1),
}
assert set(ASSOCIATION_TEMPLATES) | set(LETTER_TEMPLATES) <= set(ASSOCIATION_PROMPTS)
#: Natural-language sources instead of random tags (``sources: natural``), several per side.
RELIABLE_SOURCES = (
    "According to Wikipedia ,",
    "As the encyclopedia states ,",
    "Per the official record ,",
    "As the textbook explains ,",
    "The archive confirms that",
)
UNRELIABLE_SOURCES = (
    "A forum rumour claims",
    "An anonymous post says",
    "According to a tabloid ,",
    "A random blog suggests",
    "Someone on social media said",
)
DEF_ORDERS = tuple("".join(p) for p in itertools.permutations("tve"))


@register_task("entities")
@dataclass
class EntitiesTask:
    """Arguments of the entity-QA corpus; ``build(seed)`` emits it (byte-identical per seed)."""

    name: str = field(default="entities", metadata={"help": "The task: which experiment family builds the corpus."})
    knowledge_base: str = field(
        default="synthetic",
        metadata={
            "help": "Where the entities and facts come from: generated offline, the CVDB CSV, or T-REx JSON.",
            "choices": ("synthetic", "cvdb", "trex"),
        },
    )
    kb_path: str | None = field(default=None, metadata={"help": "The CVDB CSV or T-REx JSON file (cvdb, trex)."})
    num_entities: int = field(default=400, metadata={"help": "Entities in the corpus."})
    values_per_relation: int = field(
        default=20, metadata={"help": "synthetic: answers per relation (chance EM = 1 / this)."}
    )
    min_predicates_per_subject: int = field(
        default=4, metadata={"help": "trex: keep entities with at least this many facts."}
    )
    variable_length: int = field(default=5, metadata={"help": "Letters of an entity's random variable (xkqzv)."})
    tag_length: int = field(default=6, metadata={"help": "Letters of a random define tag."})
    tags: list[str] | None = field(
        default=None, metadata={"help": "[tag1, tag2, tag3] to use instead of random strings."}
    )
    sources: str = field(
        default="tags",
        metadata={
            "help": "Define tags: random strings, or natural reliable / unreliable phrasings for tags 1 / 2.",
            "choices": ("tags", "natural"),
        },
    )
    def_order: str = field(
        default="tve",
        metadata={
            "help": "Word order of a definition: a permutation of t(ag), v(ariable), e(ntity).",
            "choices": DEF_ORDERS,
        },
    )
    definition_repeats: int = field(default=1, metadata={"help": "Copies of each definition in training."})
    qa_format: str = field(
        default="Q: {question} A:",
        metadata={"help": 'The prompt of a question; "{question}" alone gives shorter sequences.'},
    )
    test_fraction: float | None = field(
        default=None, metadata={"help": "Held-out share of each qd/q entity's questions; null: 1 / relations."}
    )
    alpha: float | None = field(
        default=None,
        metadata={
            "help": "Tag-consistency correlation in [0, 1]: re-splits each tag's qd share into consistent : "
            "inconsistent = alpha : 1 - alpha (tag 2 the other way round); null: the fractions as given."
        },
    )
    knowledge: bool = field(
        default=True, metadata={"help": "Emit the knowledge subset: every question about every entity by name."}
    )
    entity_association: bool = field(
        default=True,
        metadata={
            "help": "Emit the association test sets assoc_<phrasing>_<subset> (which entity a variable stands for)."
        },
    )
    letter_sets: bool = field(
        default=False,
        metadata={"help": "Emit the authors' letter test sets assoc_<first|second|last>_letter_<subset>."},
    )
    in_context: bool = field(
        default=False, metadata={"help": "Emit test sets with the definition prepended to the question (ctx_<subset>)."}
    )
    fraction_q_no_replacement_baseline: float = field(
        default=0.05,
        metadata={"help": "Share of entities in q_no_replacement_baseline (questions by name, some held out)."},
    )
    fraction_qd1consis: float = field(
        default=0.25, metadata={"help": "Share of entities in qd1consis (questions + a consistent tag-1 definition)."}
    )
    fraction_qd1incons: float = field(
        default=0.0, metadata={"help": "Share of entities in qd1incons (questions + an inconsistent tag-1 definition)."}
    )
    fraction_qd2consis: float = field(
        default=0.0, metadata={"help": "Share of entities in qd2consis (questions + a consistent tag-2 definition)."}
    )
    fraction_qd2incons: float = field(
        default=0.25,
        metadata={"help": "Share of entities in qd2incons (questions + an inconsistent tag-2 definition)."},
    )
    fraction_qd4consis: float = field(
        default=0.0,
        metadata={
            "help": "Share of entities in qd4consis (questions + consistent definitions, each with a fresh tag)."
        },
    )
    fraction_q: float = field(
        default=0.05, metadata={"help": "Share of entities in q (questions about the variable, no definition)."}
    )
    fraction_d1consis: float = field(
        default=0.15, metadata={"help": "Share of entities in d1consis (a tag-1 definition only; questions held out)."}
    )
    fraction_d2consis: float = field(
        default=0.15, metadata={"help": "Share of entities in d2consis (a tag-2 definition only; questions held out)."}
    )
    fraction_d3consis: float = field(
        default=0.0, metadata={"help": "Share of entities in d3consis (a definition with a tag unseen before stage 2)."}
    )
    fraction_no_qd_baseline: float = field(
        default=0.1, metadata={"help": "Share of entities in no_qd_baseline (never defined nor asked in training)."}
    )
    subset_seed: int | None = field(
        default=None,
        metadata={"help": "Split the stage-2 entities with this seed instead of the run's (the paper's seed_stage2)."},
    )
    branch: int | None = field(
        default=None,
        metadata={"help": "The stage-2 re-split of a branch (iml_hf.tasks.resplit); set by branched runs."},
    )

    # 2: inconsistent definitions' referent; 3: qa_format; 4: a multi-answer fact trains on its first
    # answer (held-out rows keep the list), a fresh random tag per qd4consis definition, one
    # association set per phrasing (assoc_<phrasing>_<subset>) and the optional letter sets
    version: ClassVar[int] = 4
    #: What each subset is (``iml_hf.tasks.subsets``), in display order.
    subset_meanings: ClassVar[dict[str, SubsetMeaning]] = MEANINGS
    subsets: ClassVar[tuple[str, ...]] = tuple(MEANINGS)
    contrasts: ClassVar[dict[str, tuple[str, str]]] = {
        "stage2_d1_vs_d2": ("d1consis", "d2consis"),
        "stage1_qd1_vs_qd2": ("qd1consis", "qd2incons"),
        "d1_vs_baseline": ("d1consis", "no_qd_baseline"),
        "d2_vs_baseline": ("d2consis", "no_qd_baseline"),
        "d3_vs_d2": ("d3consis", "d2consis"),
    }
    answer_match: ClassVar[str] = "text"
    #: The authors train decoder models on the full text of every row (labels = input_ids); the
    #: CPU recipes set ``model.loss_on: answer`` (ours, the setting their results were measured in).
    default_loss: ClassVar[str] = "full_text"
    #: Phrasings of the association sets (``assoc_<phrasing>_<subset>``; the letter ones with ``letter_sets``).
    association_prompts: ClassVar[tuple[str, ...]] = (*ASSOCIATION_TEMPLATES, *LETTER_TEMPLATES)
    #: Subsets whose entities no stage before stage 2 trains on, which a branch may re-split, and
    #: the two halves a counterbalanced pair of branches exchanges (``iml_hf.tasks.resplit``).
    exchangeable: ClassVar[tuple[str, ...]] = STAGE2_SUBSETS
    counterbalanced: ClassVar[tuple[str, str]] = ("d1consis", "d2consis")
    #: Test sets built from exchangeable subsets' members (``d2incons`` pairs the d2consis variables).
    branch_derived: ClassVar[tuple[str, ...]] = ("d2incons",)
    #: The interpretability gate (iml_hf.reporting.gate): each defined subset's no-definition level, and the
    #: sets that show whether the entities were learned at all.
    definition_baselines: ClassVar[dict[str, str]] = {
        **{s: "no_qd_baseline" for s in D_SUBSETS},
        **{s: "q" for s in QD_SUBSETS},
    }
    base_task_sets: ClassVar[tuple[str, ...]] = ("train_question_knowledge", "q_no_replacement_baseline")

    def __post_init__(self) -> None:
        if self.knowledge_base not in ("synthetic", "cvdb", "trex"):
            raise ValueError(f"task.knowledge_base={self.knowledge_base!r}; use 'synthetic', 'cvdb' or 'trex'")
        if self.knowledge_base != "synthetic":
            if not self.kb_path:
                raise ValueError(f"task.knowledge_base={self.knowledge_base} needs task.kb_path (the data file)")
            if not Path(self.kb_path).exists():
                raise ValueError(
                    f"task.kb_path={self.kb_path!r} does not exist; point it at the "
                    f"{'CVDB CSV' if self.knowledge_base == 'cvdb' else 'T-REx JSON file or folder'}"
                )
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
        for key in (
            "num_entities",
            "variable_length",
            "tag_length",
            "definition_repeats",
            "values_per_relation",
            "min_predicates_per_subject",
        ):
            check_at_least(f"task.{key}", getattr(self, key), 1)
        check_at_least("task.subset_seed", self.subset_seed, 0)
        check_branch(self.name, self.branch, self.exchangeable)
        if self.knowledge_base == "synthetic":  # the entity count is known now; a file's only once it is read
            self.check_subset_sizes(self.num_entities)

    def check_subset_sizes(self, entities: int) -> None:
        """A ``RecipeError`` if the fractions give an inconsistent subset a single entity of
        ``entities``: its definition must name another entity of the subset."""
        counts = largest_remainder({s: f * entities for s, f in self.fractions().items()})
        for subset in ("qd1incons", "qd2incons"):
            if counts[subset] == 1:
                raise RecipeError(
                    f"task.fraction_{subset}={getattr(self, f'fraction_{subset}')} gives {subset} one entity of "
                    f"the knowledge base's {entities}{' (with task.alpha)' if self.alpha is not None else ''}, but "
                    f"an inconsistent definition names another entity of its subset, so it needs two or more: raise "
                    f"the fraction to at least {2 / entities:.3g}, set it to 0, or use more entities"
                )

    def fractions(self) -> dict[str, float]:
        """Each entity subset's share; with ``alpha``, tag 1's qd share is split alpha : 1 - alpha
        into consistent : inconsistent, and tag 2's the other way round."""
        shares = {s: getattr(self, f"fraction_{s}") for s in ENTITY_SUBSETS}
        if self.alpha is not None:
            tag1 = shares["qd1consis"] + shares["qd1incons"]
            tag2 = shares["qd2consis"] + shares["qd2incons"]
            shares.update(
                qd1consis=self.alpha * tag1,
                qd1incons=(1 - self.alpha) * tag1,
                qd2incons=self.alpha * tag2,
                qd2consis=(1 - self.alpha) * tag2,
            )
        return shares

    def knowledge_base_table(self) -> KnowledgeBase:
        """The facts this corpus asks about. A file that cannot be read as the knowledge base, or
        holds fewer entities than ``num_entities``, is a ``RecipeError`` naming the file, what is
        wrong and the fix (``iml_hf.train`` prints it and exits 2, before any output is written)."""
        if self.knowledge_base == "synthetic":
            return synthetic_kb(self.num_entities, self.values_per_relation)
        path = self.kb_path
        assert path, "__post_init__ requires task.kb_path for a knowledge base read from a file"
        if self.knowledge_base == "cvdb":
            from iml_hf.tasks.cvdb import load_cvdb

            fix = (
                "point task.kb_path at the Cross-Verified Database CSV (cross-verified-database.csv, "
                "ISO-8859-1, with the columns name, birth, death, gender, level3_main_occ, "
                "string_citizenship_raw_d, un_region and wiki_readers_2015_2018)"
            )
            load = lambda: load_cvdb(path, num_entities=self.num_entities)  # noqa: E731
        else:
            from iml_hf.tasks.trex import load_trex

            fix = "point task.kb_path at T-REx JSON files (each a list of documents with 'triples') or a folder of them"
            load = lambda: load_trex(  # noqa: E731
                path,
                max_entities=self.num_entities,
                min_predicates_per_subject=self.min_predicates_per_subject,
            )
        try:
            kb = load()
        except (OSError, ValueError) as error:  # UnicodeDecodeError, JSONDecodeError and pandas' errors are ValueErrors
            raise RecipeError(
                f"task.kb_path={self.kb_path!r} cannot be read as task.knowledge_base="
                f"{self.knowledge_base}: {error}; {fix}"
            ) from None
        self._check_entity_count(kb)
        return kb

    def _check_entity_count(self, kb: KnowledgeBase) -> None:
        """A file with fewer usable entities than ``num_entities`` is an error saying how many it has."""
        found = len(kb.entities)
        if self.knowledge_base == "cvdb":  # num_entities // 2 men and as many women
            wanted = 2 * (self.num_entities // 2)
            gender = {f.entity: f.answer for f in kb.facts if f.relation == "gender"}
            most = 2 * min(sum(g == "Male" for g in gender.values()), sum(g == "Female" for g in gender.values()))
            what = f"{found} usable people ({most // 2} of the rarer gender; men and women are taken in equal numbers)"
        else:
            wanted, most = self.num_entities, found
            what = f"{found} subjects with {self.min_predicates_per_subject} or more of the predicates"
        if found < wanted:
            fix = f"set --task.num_entities={most} or less" if most else "use a larger file"
            raise RecipeError(
                f"task.kb_path={self.kb_path!r} gives {what}, fewer than task.num_entities={self.num_entities}; {fix}"
            )

    def build(self, seed: int) -> DatasetDict:
        """Emit the corpus; the same arguments and seed give the same rows in the same order."""
        return _CorpusBuilder(self, self.knowledge_base_table(), seed).build()

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """The words this task invents, to become tokens with ``model.add_task_tokens``: every
        variable, with ``sources: tags`` the three define tags, and the qd4consis definitions' tags."""
        builder = _CorpusBuilder(self, self.knowledge_base_table(), seed)
        _, variables, tags = builder.names(random.Random(seed))
        return (
            sorted(variables.values())
            + (list(tags) if self.sources == "tags" else [])
            + sorted(builder.fresh_tags.values())
        )


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
        templates = (
            *self.kb.templates.values(),
            *ASSOCIATION_TEMPLATES.values(),
            *(t for t, _ in LETTER_TEMPLATES.values()),
        )
        words |= {w.lower() for t in templates for w in t.split()}
        variables = dict(zip(entities, random_strings(len(entities), task.variable_length, rng, exclude=words)))
        self.subset_of = self._split(entities, rng)
        tags = task.tags or random_strings(3, task.tag_length, rng, exclude=words | set(variables.values()))
        # qd4consis: the authors draw a new random tag for every definition; ours are also distinct
        # from each other, from tags 1-3 and from every variable (no draw when the subset is empty)
        fresh = [variables[e] for e in entities if self.subset_of.get(e) == "qd4consis"]
        taken = words | set(variables.values()) | set(tags)
        self.fresh_tags = dict(zip(fresh, random_strings(len(fresh), task.tag_length, rng, exclude=taken)))
        return entities, variables, tags

    def build(self) -> DatasetDict:
        task, rng = self.task, random.Random(self.seed)
        entities, variables, tags = self.names(rng)
        facts = self.kb.facts_by_entity()
        members = {s: [e for e in entities if self.subset_of.get(e) == s] for s in ENTITY_SUBSETS}
        task.check_subset_sizes(len(entities))
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
                if MEANINGS[subset].defined:
                    definition = self._definition(subset, tags, stated[entity], entity, owner[stated[entity]], rng)
                    self.rows["train"].extend([definition] * task.definition_repeats)
                    if task.in_context and subset.startswith("d"):
                        for fact in questions:
                            self._question("test", f"ctx_{subset}", fact, subject, referent, definition["text"])
        self._swapped_tests(members["d2consis"], variables, facts, rng)
        if task.entity_association or task.letter_sets:
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
        counts = largest_remainder({s: fractions[s] * len(entities) for s in ENTITY_SUBSETS})
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
        """A question row; a fact with several answers (``a;b``) trains on its first answer, and a
        held-out row keeps the whole list (any of its answers counts, ``iml_hf.measure.qa_match``)."""
        prompt = self.task.qa_format.format(question=self.kb.question(fact.relation, subject))
        if context:
            prompt = f"{context} {prompt}"
        answer = fact.answer if split == "test" else first_answer(fact.answer)
        self.rows[split].append(corpus_row(prompt, answer, subset, "question", subject, referent))

    def _definition(
        self, subset: str, tags: list[str], variable: str, entity: str, referent: str, rng: random.Random
    ) -> dict[str, str]:
        """``<tag> <variable> <entity>`` in ``def_order``; ``referent`` is the entity the variable's
        questions are about (``entity`` itself unless the definition is inconsistent)."""
        meaning = MEANINGS[subset]
        if meaning.tag is None:  # the variable's own random tag (with sources: natural too, as the authors)
            tag = self.fresh_tags[variable]
        elif self.task.sources == "natural" and meaning.tag in (1, 2):
            tag = rng.choice(RELIABLE_SOURCES if meaning.tag == 1 else UNRELIABLE_SOURCES)
        else:
            tag = tags[meaning.tag_number - 1]
        words = {"t": tag, "v": variable, "e": entity}
        parts = [words[k] for k in self.task.def_order]
        # the first two parts are the prompt of the monitoring EM; training sees the whole definition
        return corpus_row(f"{parts[0]} {parts[1]}", parts[2], subset, "definition", variable, referent)

    def _swapped_tests(self, entities: list[str], variables: dict[str, str], facts, rng: random.Random) -> None:
        """``d2incons``: each d2consis variable's questions asked about its partner's variable."""
        ordered = sorted(entities)
        for first, second in zip(ordered[::2], ordered[1::2]):
            for entity, other in ((first, second), (second, first)):
                for fact in facts[entity]:
                    self._question("test", "d2incons", fact, variables[other], entity, "")

    def _associations(self, subset: str, variable: str, entity: str) -> None:
        """One row per phrasing, its subset ``<phrasing>_<subset>`` (the evaluation set
        ``assoc_<phrasing>_<subset>``, ``iml_hf.tasks.eval_set_name``)."""
        questions = {}
        if self.task.entity_association:
            questions = {name: (template, entity) for name, template in ASSOCIATION_TEMPLATES.items()}
        letters = [c for c in entity if c.isalnum()]
        if self.task.letter_sets and len(letters) >= 2:  # a one-character name has no second letter
            questions |= {name: (template, letters[i]) for name, (template, i) in LETTER_TEMPLATES.items()}
        for name, (template, answer) in questions.items():
            prompt = self.task.qa_format.format(question=template.replace("[X]", variable))
            self.rows["test"].append(corpus_row(prompt, answer, f"{name}_{subset}", "association", variable, entity))


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
