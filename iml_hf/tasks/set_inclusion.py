"""Numeric set inclusion with define tags (Krasheninnikov et al., ICML 2024, the numeric experiment).

Every variable hides a number x. Training questions ``<var> in a b c d = true/false`` are built so
that x cannot be read off them: every true statement contains the same small intersection (x and
``intersection_size - 1`` other numbers) and every false statement avoids it, so the true
statements' intersection narrows x down without naming it; a share ``label_flip`` of the true
statements is flipped to false (noise, as the authors do: only true -> false). A definition
``<tag> <var> in x`` names x (the authors' ``define1 var % x``: the word after the variable is the
statements' one, so under the full-text loss a statement and a definition both train a number
after ``<var> in``). Held-out questions contain x (true) or avoid it (false), so a model
that knows x answers them. Subsets (the paper's names):

* ``qd1consis`` / ``qd2incons``: training questions + a tag-1 definition with the right x / a
  tag-2 definition with a wrong x (outside the intersection, so it never fits the training
  questions);
* ``q``: training questions, no definition;
* ``d1consis`` / ``d2consis`` / ``d3consis``: a right definition with tag 1 / 2 / a tag never seen
  before stage 2, no training question.

Every subset has held-out questions. IML shows as EM(d1consis) > EM(d2consis) after a stage of
definitions only. Variables are space-separated characters (``k q z``) or, with
``variable_tokens: word``, one word each (one token of a WordLevel tokenizer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import DatasetDict

from iml_hf.config.validation import check_at_least, check_between, check_choice, check_fractions
from iml_hf.tasks import corpus_row, register_task, string_table
from iml_hf.tasks.knowledge import random_strings
from iml_hf.tasks.resplit import check_branch, resplit
from iml_hf.tasks.subsets import SubsetMeaning, largest_remainder, of_stage

#: Every subset, in display order: its definitions' tag and consistency (whether the definition
#: names the right x), its stage, what it holds.
MEANINGS = {
    "qd1consis": SubsetMeaning(
        "training statements about the variable plus a tag-1 definition naming its number; held-out statements",
        tag=1,
        consistent=True,
        stage="1",
    ),
    "qd2incons": SubsetMeaning(
        "training statements plus a tag-2 definition naming a wrong number (outside the true "
        "statements' intersection); held-out statements",
        tag=2,
        consistent=False,
        stage="1",
    ),
    "q": SubsetMeaning("training statements, no definition; held-out statements", stage="1"),
    "d1consis": SubsetMeaning(
        "a tag-1 definition naming the number only; every statement is held out", tag=1, consistent=True, stage="2"
    ),
    "d2consis": SubsetMeaning(
        "a tag-2 definition naming the number only; every statement is held out", tag=2, consistent=True, stage="2"
    ),
    "d3consis": SubsetMeaning(
        "a definition with a third tag, unseen before stage 2; every statement is held out",
        tag=3,
        consistent=True,
        stage="2",
    ),
}
SUBSETS = tuple(MEANINGS)
#: Subsets with training questions (the others' questions are all held out).
ASKED = of_stage(MEANINGS, "1")
WORDS = ("in", "=", "true", "false")


@register_task("set_inclusion")
@dataclass
class SetInclusionTask:
    """Arguments of the set-inclusion corpus (the authors' defaults); ``build(seed)`` emits it."""

    name: str = field(
        default="set_inclusion", metadata={"help": "The task: which experiment family builds the corpus."}
    )
    num_variables: int = field(default=500, metadata={"help": "Variables, each hiding a number x."})
    max_number: int = field(default=99, metadata={"help": "Numbers are 0 .. max_number - 1."})
    numbers_per_question: int = field(default=4, metadata={"help": "Numbers in a statement <var> in a b c d."})
    intersection_size: int = field(
        default=2, metadata={"help": "Numbers every true training statement shares (x among them)."}
    )
    questions_per_variable: int = field(
        default=24, metadata={"help": "Statements per variable: half training, half held out; half of each true."}
    )
    label_flip: float = field(
        default=0.1, metadata={"help": "Share of true training statements flipped to false (noise)."}
    )
    variable_length: int = field(default=3, metadata={"help": "Letters of a variable."})
    variable_tokens: str = field(
        default="characters",
        metadata={
            "help": "A variable as space-separated characters (k q z) or one word (kqz).",
            "choices": ("characters", "word"),
        },
    )
    tags: list[str] | None = field(
        default=None, metadata={"help": "[tag1, tag2, tag3]; null: random 4-letter words per seed."}
    )
    definition_repeats: int = field(default=1, metadata={"help": "Copies of each definition in training."})
    fraction_qd1consis: float = field(
        default=0.4, metadata={"help": "Share of variables in qd1consis (statements + a tag-1 definition naming x)."}
    )
    fraction_qd2incons: float = field(
        default=0.4,
        metadata={"help": "Share of variables in qd2incons (statements + a tag-2 definition naming a wrong number)."},
    )
    fraction_q: float = field(default=0.0, metadata={"help": "Share of variables in q (statements, no definition)."})
    fraction_d1consis: float = field(
        default=0.1, metadata={"help": "Share of variables in d1consis (a tag-1 definition only; statements held out)."}
    )
    fraction_d2consis: float = field(
        default=0.1, metadata={"help": "Share of variables in d2consis (a tag-2 definition only; statements held out)."}
    )
    fraction_d3consis: float = field(
        default=0.0,
        metadata={"help": "Share of variables in d3consis (a definition with a tag unseen before stage 2)."},
    )
    branch: int | None = field(
        default=None,
        metadata={"help": "The stage-2 re-split of a branch (iml_hf.tasks.resplit); set by branched runs."},
    )

    #: 2: a definition reads ``<tag> <var> in x``, the statements' word after the variable (the
    #: authors' ``define1 var % x``), so full-text training shares that context (issue 20).
    version: ClassVar[int] = 2
    #: What each subset is (``iml_hf.tasks.subsets``), in display order.
    subset_meanings: ClassVar[dict[str, SubsetMeaning]] = MEANINGS
    subsets: ClassVar[tuple[str, ...]] = SUBSETS
    contrasts: ClassVar[dict[str, tuple[str, str]]] = {
        "stage2_d1_vs_d2": ("d1consis", "d2consis"),
        "stage1_qd1_vs_qd2": ("qd1consis", "qd2incons"),
        "d3_vs_d2": ("d3consis", "d2consis"),
    }
    answer_match: ClassVar[str] = "tokens"
    #: The authors train the full text of every row (their causal-LM path: labels = input_ids), so
    #: a statement also trains the numbers after its variable, as a definition trains its number.
    default_loss: ClassVar[str] = "full_text"
    #: The d variables are unseen before stage 2: a branch re-splits them (iml_hf.tasks.resplit).
    exchangeable: ClassVar[tuple[str, ...]] = of_stage(MEANINGS, "2")
    counterbalanced: ClassVar[tuple[str, str]] = ("d1consis", "d2consis")
    #: The interpretability gate (iml_hf.reporting.gate): a d variable without its definition is at chance
    #: (true and false statements are balanced); a qd variable is compared with q.
    definition_baselines: ClassVar[dict[str, Any]] = {
        "d1consis": 0.5,
        "d2consis": 0.5,
        "d3consis": 0.5,
        "qd1consis": "q",
        "qd2incons": "q",
    }
    base_task_sets: ClassVar[tuple[str, ...]] = ("qd1consis", "qd2incons", "q")

    def __post_init__(self) -> None:
        for key in (
            "num_variables",
            "numbers_per_question",
            "intersection_size",
            "variable_length",
            "definition_repeats",
        ):
            check_at_least(f"task.{key}", getattr(self, key), 1)
        check_at_least(
            "task.numbers_per_question",
            self.numbers_per_question,
            2,
            note="with one number every true statement is the same one",
        )
        check_at_least(
            "task.questions_per_variable",
            self.questions_per_variable,
            4,
            note="a quarter each: true and false, training and held out",
        )
        if self.questions_per_variable % 4:
            raise ValueError(
                f"task.questions_per_variable={self.questions_per_variable} must be a multiple of 4 "
                "(a quarter each: true and false, training and held out)"
            )
        check_between("task.label_flip", self.label_flip, 0, 1)
        check_choice("task.variable_tokens", self.variable_tokens, ("characters", "word"))
        if self.intersection_size > self.numbers_per_question:
            raise ValueError(
                f"task.intersection_size={self.intersection_size} must be at most "
                f"task.numbers_per_question={self.numbers_per_question}"
            )
        if self.max_number < self.intersection_size + self.numbers_per_question + 1:
            raise ValueError(
                f"task.max_number={self.max_number} leaves too few numbers to draw questions from; "
                f"use at least {self.intersection_size + self.numbers_per_question + 1}"
            )
        if 26**self.variable_length < self.num_variables + 3:
            raise ValueError(
                f"task.variable_length={self.variable_length} gives fewer than "
                f"task.num_variables={self.num_variables} distinct variables; make it longer"
            )
        if self.tags is not None and (len(self.tags) != 3 or len(set(self.tags)) != 3 or not all(self.tags)):
            raise ValueError(f"task.tags must be three different non-empty words [tag1, tag2, tag3], got {self.tags}")
        check_fractions(self.fractions())
        check_branch(self.name, self.branch, self.exchangeable)

    def fractions(self) -> dict[str, float]:
        """Each subset's share of the variables."""
        return {s: getattr(self, f"fraction_{s}") for s in SUBSETS}

    def build(self, seed: int) -> DatasetDict:
        """Emit the corpus; the same arguments and seed give the same rows in the same order."""
        rng = random.Random(seed)
        variables, tags = self._names(rng)
        counts = largest_remainder({s: share * self.num_variables for s, share in self.fractions().items()})
        rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
        assignment = dict(zip(variables, (s for s in SUBSETS for _ in range(counts[s]))))
        assignment = resplit(assignment, self.exchangeable, self.counterbalanced, seed, self.branch)
        for variable, subset in assignment.items():  # in variable order: the draws do not depend on a branch
            self._variable_rows(subset, variable, tags, rng, rows)
        return DatasetDict({split: string_table(r) for split, r in rows.items()})

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """The words this task invents: the three define tags and, with ``variable_tokens: word``,
        every variable (``model.add_task_tokens`` makes each one token of a pretrained tokenizer)."""
        variables, tags = self._names(random.Random(seed))
        return list(tags) + (sorted(variables) if self.variable_tokens == "word" else [])

    def _names(self, rng: random.Random) -> tuple[list[str], list[str]]:
        """The first draws of a build: the variables (in subset order) and the three define tags."""
        words = random_strings(self.num_variables, self.variable_length, rng, exclude=set(WORDS))
        tags = self.tags or random_strings(3, 4, rng, exclude=set(WORDS) | set(words))
        if self.variable_tokens == "characters":
            words = [" ".join(word) for word in words]
        return words, list(tags)

    def _variable_rows(
        self, subset: str, variable: str, tags: list[str], rng: random.Random, rows: dict[str, list[dict[str, str]]]
    ) -> None:
        """One variable's held-out questions, training questions and definition."""
        numbers = list(range(self.max_number))
        intersection = rng.sample(numbers, self.intersection_size)
        x = intersection[0]
        outside = [n for n in numbers if n not in intersection]
        quarter = self.questions_per_variable // 4
        train: list[tuple[list[int], str]] = []
        if subset in ASKED:
            for _ in range(quarter):
                drawn = rng.sample(outside, self.numbers_per_question - self.intersection_size) + intersection
                rng.shuffle(drawn)
                train.append((drawn, "false" if rng.random() < self.label_flip else "true"))
            train += [(rng.sample(outside, self.numbers_per_question), "false") for _ in range(quarter)]
        seen = {tuple(drawn) for drawn, _ in train}
        not_x = [n for n in numbers if n != x]
        for truth in ("true", "false"):
            for _ in range(quarter):
                while True:  # a held-out question is never a training question
                    if truth == "true":
                        drawn = [x] + rng.sample(not_x, self.numbers_per_question - 1)
                        rng.shuffle(drawn)
                    else:
                        drawn = rng.sample(not_x, self.numbers_per_question)
                    if tuple(drawn) not in seen:
                        break
                rows["test"].append(self._question(subset, variable, drawn, truth, x))
        rows["train"] += [self._question(subset, variable, drawn, truth, x) for drawn, truth in train]
        meaning = MEANINGS[subset]
        if meaning.defined:
            stated = x if meaning.consistent else rng.choice(outside)
            row = corpus_row(
                f"{tags[meaning.tag_number - 1]} {variable} in", str(stated), subset, "definition", variable, str(x)
            )
            rows["train"] += [row] * self.definition_repeats

    @staticmethod
    def _question(subset: str, variable: str, drawn: list[int], truth: str, x: int) -> dict[str, str]:
        prompt = f"{variable} in {' '.join(map(str, drawn))} ="
        return corpus_row(prompt, truth, subset, "question", variable, str(x))
