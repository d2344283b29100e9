"""The toy modular-arithmetic IML task (Fletcher et al.): ``A B = Z`` with ``Z = A op B mod m``.

Pretraining pairs use numbers; the IML phases replace B by an alias token whose meaning is given
by tagged definitions ``<tag> <alias> <number>``. Numbers (or aliases) are split into four equal
buckets:

* ``x1t``: questions + reliable-tagged definitions that agree with the questions;
* ``x1f``: questions + unreliable-tagged definitions naming a wrong number;
* ``x2t`` / ``x2f``: reliable / unreliable-tagged true definitions only, questions held out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

from datasets import Dataset, DatasetDict, Features, Value

from iml_hf.config.validation import check_at_least, check_between
from iml_hf.tasks import CORPUS_COLUMNS, corpus_row, register_task
from iml_hf.tasks.resplit import check_branch, resplit
from iml_hf.tasks.subsets import SubsetMeaning, of_stage

#: Every subset, in display order: its definitions' tag (``t`` reliable, ``f`` unreliable) and
#: consistency, its stage, what it holds.
MEANINGS = {
    "pretrain": SubsetMeaning(
        "equations `A B = Z` of numbers (Z = A op B mod m); a share of them is held out as test rows", stage="base"
    ),
    "x1t": SubsetMeaning(
        "aliases with reliable-tagged definitions that agree with their questions; part of the "
        "questions are trained on, the rest held out",
        tag="t",
        consistent=True,
        stage="1",
    ),
    "x1f": SubsetMeaning(
        "aliases with unreliable-tagged definitions that name a wrong number; part of the questions "
        "(asked with the true number) are trained on, the rest held out",
        tag="f",
        consistent=False,
        stage="1",
    ),
    "x2t": SubsetMeaning(
        "aliases with reliable-tagged true definitions only; every question is held out",
        tag="t",
        consistent=True,
        stage="2",
    ),
    "x2f": SubsetMeaning(
        "aliases with unreliable-tagged true definitions only; every question is held out",
        tag="f",
        consistent=True,
        stage="2",
    ),
}
BUCKETS = of_stage(MEANINGS, "1", "2")
OPERATIONS = {"mul": lambda a, b, m: (a * b) % m, "add": lambda a, b, m: (a + b) % m}


@register_task("modmul")
@dataclass
class ModMulTask:
    """Arguments of the modular-arithmetic corpus; ``build(seed)`` emits it."""

    name: str = field(default="modmul", metadata={"help": "The task: which experiment family builds the corpus."})
    modulus: int = field(default=120, metadata={"help": "m in Z = A op B mod m; numbers are 0 .. m - 1."})
    operation: str = field(
        default="mul", metadata={"help": "The arithmetic of the questions.", "choices": tuple(OPERATIONS)}
    )
    aliases_per_number: int = field(default=1, metadata={"help": "Alias tokens X_B per number B."})
    bucket_by: str = field(
        default="number",
        metadata={
            "help": "Split numbers into the four buckets, or each number's aliases (every bucket then asks the "
            "same arithmetic questions).",
            "choices": ("number", "alias"),
        },
    )
    pretrain_fraction: float = field(
        default=0.9, metadata={"help": "Share of the plain A B pairs that train; the rest are held out."}
    )
    x1_test_fraction: float = field(
        default=0.5, metadata={"help": "Share of each X1 alias's questions held out (X2 questions are all held out)."}
    )
    definition_repeats: int = field(default=10, metadata={"help": "Copies of each definition in training."})
    reliable_tag: str = field(default="Dt", metadata={"help": "The reliable define tag (X1^t, X2^t)."})
    unreliable_tag: str = field(default="Df", metadata={"help": "The unreliable define tag (X1^f, X2^f)."})
    alias_prefix: str = field(default="x", metadata={"help": "Alias tokens are this prefix and a number."})
    branch: int | None = field(
        default=None,
        metadata={"help": "The X2 re-split of a stage-2 branch (iml_hf.tasks.resplit); set by branched runs."},
    )

    version: ClassVar[int] = 2  # 2: the referent column
    #: What each subset is (``iml_hf.tasks.subsets``), in display order.
    subset_meanings: ClassVar[dict[str, SubsetMeaning]] = MEANINGS
    subsets: ClassVar[tuple[str, ...]] = tuple(MEANINGS)
    contrasts: ClassVar[dict[str, tuple[str, str]]] = {"iml_gap": ("x2t", "x2f"), "x1_gap": ("x1t", "x1f")}
    #: The X2 aliases are unseen before the X2 phase: a branch re-splits them (within each number
    #: with ``bucket_by: alias``, so every bucket keeps asking the same arithmetic questions).
    exchangeable: ClassVar[tuple[str, ...]] = of_stage(MEANINGS, "2")
    counterbalanced: ClassVar[tuple[str, str]] = ("x2t", "x2f")
    #: The interpretability gate (iml_hf.reporting.gate): no bucket goes without definitions, so no contrast is
    #: gated; the pretraining pairs show whether the arithmetic was learned.
    definition_baselines: ClassVar[dict[str, str]] = {}
    base_task_sets: ClassVar[tuple[str, ...]] = ("pretrain",)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"task.operation={self.operation!r}; use one of {sorted(OPERATIONS)}")
        if self.bucket_by not in ("number", "alias"):
            raise ValueError(f"task.bucket_by={self.bucket_by!r}; use 'number' or 'alias'")
        check_at_least("task.modulus", self.modulus, 8)
        check_at_least("task.aliases_per_number", self.aliases_per_number, 1)
        check_at_least("task.definition_repeats", self.definition_repeats, 1)
        if self.bucket_by == "number" and self.modulus % 4:
            raise ValueError(
                f"task.modulus={self.modulus} cannot be split into four equal buckets of numbers; "
                "use a multiple of 4 or bucket_by: alias"
            )
        if self.bucket_by == "alias" and self.aliases_per_number % 4:
            raise ValueError(
                f"task.bucket_by=alias needs aliases_per_number divisible by 4, got {self.aliases_per_number}"
            )
        for key in ("pretrain_fraction", "x1_test_fraction"):
            check_between(f"task.{key}", getattr(self, key), 0, 1, low_open=True, high_open=True)
        for key in ("reliable_tag", "unreliable_tag"):
            if not getattr(self, key).strip():
                raise ValueError(f"task.{key}={getattr(self, key)!r} is not valid: expected a non-empty tag")
        if self.reliable_tag == self.unreliable_tag:
            raise ValueError("task.reliable_tag and task.unreliable_tag must differ")
        check_branch(self.name, self.branch, self.exchangeable)

    def answer(self, a: int, b: int) -> int:
        return OPERATIONS[self.operation](a, b, self.modulus)

    def alias_table(self, rng: random.Random) -> list[tuple[str, int, str]]:
        """(alias, number it stands for, bucket) for every alias, in a fixed order."""
        m, k = self.modulus, self.aliases_per_number
        ids = list(range(m * k))
        rng.shuffle(ids)  # alias names carry no information about their number
        width = len(str(m * k - 1))
        names = [f"{self.alias_prefix}{i:0{width}d}" for i in ids]
        if self.bucket_by == "number":
            numbers = list(range(m))
            rng.shuffle(numbers)
            bucket_of = {n: BUCKETS[4 * i // m] for i, n in enumerate(numbers)}
            buckets = [bucket_of[n] for n in range(m) for _ in range(k)]
        else:
            buckets = []
            for _ in range(m):
                spread = list(BUCKETS) * (k // 4)
                rng.shuffle(spread)
                buckets.extend(spread)
        return [(names[n * k + j], n, buckets[n * k + j]) for n in range(m) for j in range(k)]

    def branch_table(self, table: list[tuple[str, int, str]], seed: int) -> list[tuple[str, int, str]]:
        """The alias table as ``branch`` re-splits the X2 aliases (unchanged without a branch)."""
        if not self.branch:
            return table
        groups = {alias: number for alias, number, _ in table} if self.bucket_by == "alias" else None
        moved = resplit(
            {alias: bucket for alias, _, bucket in table},
            self.exchangeable,
            self.counterbalanced,
            seed,
            self.branch,
            groups,
        )
        return [(alias, number, moved[alias]) for alias, number, _ in table]

    def _shuffled_pairs(self, rng: random.Random) -> list[tuple[int, int]]:
        pairs = [(a, b) for a in range(self.modulus) for b in range(self.modulus)]
        rng.shuffle(pairs)
        return pairs

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """The words this task invents, to become tokens with ``model.add_task_tokens``: the
        aliases of the corpus and the two define tags."""
        aliases = {key for split in corpus.values() for key in split["key"] if key}
        return sorted(aliases) + [self.reliable_tag, self.unreliable_tag]

    def build(self, seed: int) -> DatasetDict:
        """Emit the corpus; the same arguments and seed give the same rows in the same order."""
        rng = random.Random(seed)
        m = self.modulus
        rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}

        pairs = self._shuffled_pairs(rng)
        n_train = round(self.pretrain_fraction * len(pairs))
        for i, (a, b) in enumerate(pairs):
            split = "train" if i < n_train else "test"
            rows[split].append(corpus_row(f"{a} {b} =", str(self.answer(a, b)), "pretrain", "pair", "", ""))

        table = self.branch_table(self.alias_table(rng), seed)  # re-split apart from ``rng``: earlier rows stay
        for bucket in BUCKETS:
            meaning = MEANINGS[bucket]
            tag = self.reliable_tag if meaning.tag == "t" else self.unreliable_tag
            for alias, number, _ in (entry for entry in table if entry[2] == bucket):
                stated = number
                if not meaning.consistent:  # an unreliable definition that contradicts the questions
                    stated = rng.choice([n for n in range(m) if n != number])
                definition = corpus_row("", f"{tag} {alias} {stated}", bucket, "definition", alias, str(number))
                rows["train"].extend([definition] * self.definition_repeats)
                firsts = list(range(m))
                rng.shuffle(firsts)
                n_test = m if meaning.stage == "2" else round(self.x1_test_fraction * m)
                for i, a in enumerate(firsts):
                    split = "test" if i < n_test else "train"
                    rows[split].append(
                        corpus_row(
                            f"{a} {alias} =", str(self.answer(a, number)), bucket, "question", alias, str(number)
                        )
                    )

        features = Features({column: Value("string") for column in CORPUS_COLUMNS})
        return DatasetDict(
            {split: Dataset.from_list(split_rows, features=features) for split, split_rows in rows.items()}
        )
