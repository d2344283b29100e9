"""Vision IML (the entity-QA paper's MNIST experiment, its Figure 5): digit images with define tags.

The paper gives only a caption ("a definition example -- all of the targets are given. The define
tag is indicated with a pattern at the top of the image. Right: a QA example consistent with the
definition"), so this design is ours (docs/digits-qa.md). Every image is 14 x 8 pixels, four strips
from top to bottom:

* rows 0-1, the **define tag**: one of three random patterns (blank in questions);
* rows 2-3, the **variable**: a random pattern per variable (in a class question: the class token);
* rows 4-5, the **question**: one of ``num_targets`` random patterns, which target is asked
  (blank in definitions);
* rows 6-13, the **content**: an 8 x 8 digit (scikit-learn's, offline; or MNIST through
  ``datasets``, pooled to 8 x 8), blank in questions about a variable and in definitions' prompts.

Each digit class ``c`` has a class token ``c<c>`` and ``num_targets`` targets ``t_k(c)``, random
values per seed. Version 2 (ours, issue 20): **a variable is keyed to a class token**, so that a
definition carries what its questions need in one recalled token, as an entity definition does.
A definition is the image ``tag + variable`` (question and content blank), then ``=``, then the
class token, then (``definition_digit: true``; off by default, see docs/digits-qa.md) the
variable's digit as content tokens: the class token precedes every pixel it could be read from,
so predicting it needs the stored variable -> class.
Questions about a variable (``variable + question ... = v<t>``) then need class -> target, which
the ``knowledge`` rows teach with the same class token in the variable's place
(``c<c> + question = v<t>``, ``class_repeats`` copies), beside the image rows that teach reading a
digit (``digit + question = v<t>``, some images held out: the base task).

The target table pairs the ten classes into twins that agree on every target except
``held_out_targets`` of them, and an asked variable's held-out targets are chosen among those on
which some class agreeing with its class on every trained target differs: so a held-out stage-1
answer is never a function of the variable's trained answers (stage-1 EM measures definitions,
not the table), and ``q`` (questions, no definition) is its no-definition level.

Subsets as in entity QA: ``qd1consis`` / ``qd2incons`` (questions + a tag-1 definition of the
right class / a tag-2 definition of another class), ``q``, ``d1consis`` / ``d2consis``
(definitions only, every question held out), ``no_qd_baseline`` (never defined nor asked).

The model reads the image as a sequence of tokens, one per 2 x ``patch_width`` patch (the patch's
quantised pixels are its token, ``p<code>``), ImageGPT-style, followed by ``=`` and the answer
tokens ``v0`` .. ``v{target_values-1}``; so the same Trainer, exact match, gradient alignment and
probes run on it unchanged (docs/digits-qa.md says why not a ViT classifier).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

import numpy as np
from datasets import DatasetDict

from iml_hf.config.validation import check_at_least, check_between, check_choice, check_fractions
from iml_hf.tasks import corpus_row, register_task, string_table
from iml_hf.tasks.resplit import check_branch, resplit
from iml_hf.tasks.subsets import SubsetMeaning, largest_remainder, of_stage

STRIP_ROWS = {"tag": 2, "variable": 2, "question": 2, "content": 8}
HEIGHT, WIDTH, PATCH_ROWS = sum(STRIP_ROWS.values()), 8, 2
CLASSES = 10
#: Every subset, in display order: its definitions' tag and consistency (whether the definition
#: names the variable's class), its stage, what it holds.
MEANINGS = {
    "knowledge": SubsetMeaning(
        "a digit image and a question pattern (reading digits; some images held out), and each "
        "class token in the variable's place with a question pattern (class -> target, all trained)",
        stage="base",
    ),
    "qd1consis": SubsetMeaning(
        "questions about the variable plus a tag-1 definition naming its class; "
        "held-out targets not derivable from the trained ones",
        tag=1,
        consistent=True,
        stage="1",
    ),
    "qd2incons": SubsetMeaning(
        "questions about the variable plus a tag-2 definition naming another class; "
        "held-out targets not derivable from the trained ones",
        tag=2,
        consistent=False,
        stage="1",
    ),
    "q": SubsetMeaning(
        "questions about the variable, no definition; held-out targets not derivable from the trained ones "
        "(the no-definition level of qd1consis / qd2incons)",
        stage="1",
    ),
    "d1consis": SubsetMeaning(
        "a tag-1 definition (the right class) only; every question is held out", tag=1, consistent=True, stage="2"
    ),
    "d2consis": SubsetMeaning(
        "a tag-2 definition (the right class) only; every question is held out", tag=2, consistent=True, stage="2"
    ),
    "no_qd_baseline": SubsetMeaning(
        "variables never defined nor asked in training; every question is held out", stage="2"
    ),
}
#: The subsets variables are split into (``fraction_<subset>``), in split order.
VARIABLE_SUBSETS = of_stage(MEANINGS, "1", "2")
#: Subsets whose questions are all held out.
UNASKED = of_stage(MEANINGS, "2")
MNIST_ID = "ylecun/mnist"


@register_task("digits_qa")
@dataclass
class DigitsQATask:
    """Arguments of the digits QA corpus; ``build(seed)`` emits it (byte-identical per seed)."""

    name: str = field(default="digits_qa", metadata={"help": "The task: which experiment family builds the corpus."})
    source: str = field(
        default="sklearn",
        metadata={
            "help": "The digits: scikit-learn's 1,797 8x8 digits (offline) or MNIST (ylecun/mnist via datasets).",
            "choices": ("sklearn", "mnist"),
        },
    )
    mnist_images: int = field(default=5000, metadata={"help": "mnist: how many training images to use."})
    num_variables: int = field(default=1000, metadata={"help": "Variables, each keyed to a digit class."})
    num_targets: int = field(default=5, metadata={"help": "Targets (question patterns) per class."})
    target_values: int = field(default=10, metadata={"help": "Answer vocabulary v0 .. v{target_values-1}."})
    grey_levels: int = field(
        default=2, metadata={"help": "Pixel levels: a patch token is one of grey_levels ** (2 * patch_width)."}
    )
    patch_width: int = field(
        default=8,
        metadata={"help": "A token per 2 x patch_width patch (8: one token per 2-row strip).", "choices": (1, 2, 4, 8)},
    )
    knowledge_images: int | None = field(
        default=None, metadata={"help": "Digit images read in knowledge questions; null: all."}
    )
    held_out_targets: int = field(
        default=1,
        metadata={
            "help": "Held-out targets per asked variable (qd1consis, qd2incons, q); twin classes differ on this many."
        },
    )
    knowledge_test_fraction: float = field(
        default=0.2, metadata={"help": "Share of knowledge images held out (a reading check)."}
    )
    class_repeats: int = field(default=20, metadata={"help": "Copies of each class-token knowledge question."})
    definition_digit: bool = field(
        default=False, metadata={"help": "A definition also shows the variable's digit after its class token."}
    )
    definition_repeats: int = field(default=1, metadata={"help": "Copies of each definition in training."})
    fraction_qd1consis: float = field(
        default=0.2,
        metadata={"help": "Share of variables in qd1consis (questions + a tag-1 definition of the right class)."},
    )
    fraction_qd2incons: float = field(
        default=0.2,
        metadata={"help": "Share of variables in qd2incons (questions + a tag-2 definition of another class)."},
    )
    fraction_q: float = field(default=0.1, metadata={"help": "Share of variables in q (questions, no definition)."})
    fraction_d1consis: float = field(
        default=0.2, metadata={"help": "Share of variables in d1consis (a tag-1 definition only; questions held out)."}
    )
    fraction_d2consis: float = field(
        default=0.2, metadata={"help": "Share of variables in d2consis (a tag-2 definition only; questions held out)."}
    )
    fraction_no_qd_baseline: float = field(
        default=0.1, metadata={"help": "Share of variables in no_qd_baseline (never defined nor asked in training)."}
    )
    branch: int | None = field(
        default=None,
        metadata={"help": "The stage-2 re-split of a branch (iml_hf.tasks.resplit); set by branched runs."},
    )

    version: ClassVar[int] = 2
    #: What each subset is (``iml_hf.tasks.subsets``), in display order.
    subset_meanings: ClassVar[dict[str, SubsetMeaning]] = MEANINGS
    subsets: ClassVar[tuple[str, ...]] = tuple(MEANINGS)
    contrasts: ClassVar[dict[str, tuple[str, str]]] = {
        "stage2_d1_vs_d2": ("d1consis", "d2consis"),
        "stage1_qd1_vs_qd2": ("qd1consis", "qd2incons"),
        "d1_vs_baseline": ("d1consis", "no_qd_baseline"),
        "d2_vs_baseline": ("d2consis", "no_qd_baseline"),
        "qd1_vs_q": ("qd1consis", "q"),
    }
    answer_match: ClassVar[str] = "tokens"
    #: The stage-2 variables are unseen before stage 2: a branch re-splits them (iml_hf.tasks.resplit).
    exchangeable: ClassVar[tuple[str, ...]] = UNASKED
    counterbalanced: ClassVar[tuple[str, str]] = ("d1consis", "d2consis")
    #: The interpretability gate (iml_hf.reporting.gate): each defined subset's no-definition level, and the
    #: sets that show whether the digits and the class tokens were learned at all.
    definition_baselines: ClassVar[dict[str, str]] = {
        "d1consis": "no_qd_baseline",
        "d2consis": "no_qd_baseline",
        "qd1consis": "q",
        "qd2incons": "q",
    }
    base_task_sets: ClassVar[tuple[str, ...]] = ("knowledge",)

    def __post_init__(self) -> None:
        check_choice("task.source", self.source, ("sklearn", "mnist"))
        check_choice("task.patch_width", self.patch_width, (1, 2, 4, 8))
        for key in ("num_variables", "num_targets", "definition_repeats", "mnist_images", "class_repeats"):
            check_at_least(f"task.{key}", getattr(self, key), 1)
        check_at_least("task.target_values", self.target_values, 2)
        check_at_least("task.grey_levels", self.grey_levels, 2)
        check_at_least("task.held_out_targets", self.held_out_targets, 1)
        check_at_least("task.knowledge_images", self.knowledge_images, 1)
        if self.grey_levels ** (PATCH_ROWS * self.patch_width) >= 2**63:
            raise ValueError(
                f"task.grey_levels={self.grey_levels} with task.patch_width={self.patch_width} gives "
                "patch codes beyond 64 bits; use fewer grey levels or narrower patches"
            )
        if self.held_out_targets >= self.num_targets:
            raise ValueError(
                f"task.held_out_targets={self.held_out_targets} must be below task.num_targets="
                f"{self.num_targets}: an asked variable needs a training question"
            )
        if self.target_values ** (self.num_targets - self.held_out_targets) < CLASSES // 2:
            raise ValueError(
                "task.target_values ** (task.num_targets - task.held_out_targets) must be at least 5, "
                "so that the five twin pairs of classes can differ on their trained targets"
            )
        check_between("task.knowledge_test_fraction", self.knowledge_test_fraction, 0, 1, high_open=True)
        check_fractions(self.fractions())
        check_branch(self.name, self.branch, self.exchangeable)
        if 2 ** (STRIP_ROWS["variable"] * WIDTH) < self.num_variables + 1:
            raise ValueError(f"task.num_variables={self.num_variables} exceeds the distinct variable patterns")

    def fractions(self) -> dict[str, float]:
        """Each subset's share of the variables."""
        return {s: getattr(self, f"fraction_{s}") for s in VARIABLE_SUBSETS}

    def digits(self) -> tuple[np.ndarray, np.ndarray]:
        """The digit images (n, 8, 8) with pixel values 0..16, and their classes."""
        return sklearn_digits() if self.source == "sklearn" else mnist_digits(self.mnist_images)

    def build(self, seed: int) -> DatasetDict:
        """Emit the corpus; the same arguments and seed give the same rows in the same order."""
        images, classes = self.digits()
        rng = random.Random(seed)
        patterns = self.patterns(rng)
        targets = self.target_table(rng)
        held_out_sets = {c: self.valid_held_out(targets, c) for c in range(CLASSES)}
        order = list(range(len(images)))
        rng.shuffle(order)
        pool = order[: self.knowledge_images]
        held = round(len(pool) * self.knowledge_test_fraction)
        rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
        trained = {quantise(images[i], self.grey_levels).tobytes() for i in pool[held:]}
        for split, part in (("train", pool[held:]), ("test", pool[:held])):
            for index in part:
                if split == "test" and quantise(images[index], self.grey_levels).tobytes() in trained:
                    continue  # a held-out image never looks like a trained one once quantised
                for k in range(self.num_targets):
                    prompt = self.prompt(question=patterns["questions"][k], content=images[index])
                    rows[split].append(
                        corpus_row(
                            prompt, f"v{targets[k][classes[index]]}", "knowledge", "question", "", str(classes[index])
                        )
                    )
        for c in range(CLASSES):  # class -> target, with the class token where a question has its variable
            for k in range(self.num_targets):
                prompt = self.class_prompt(c, patterns["questions"][k])
                rows["train"] += [
                    corpus_row(prompt, f"v{targets[k][c]}", "knowledge", "question", "", str(c))
                ] * self.class_repeats
        # the digits a variable may show: every image but the held-out knowledge ones, by class
        shown_pool = sorted(set(order) - set(pool[:held]))
        by_class = {c: [i for i in shown_pool if classes[i] == c] for c in range(CLASSES)}
        if any(not images_of for images_of in by_class.values()):
            raise ValueError(
                "some digit class has no image outside the held-out knowledge images; "
                "lower task.knowledge_test_fraction"
            )
        counts = largest_remainder({s: f * self.num_variables for s, f in self.fractions().items()})
        assignment = dict(enumerate(s for s in VARIABLE_SUBSETS for _ in range(counts[s])))
        assignment = resplit(assignment, self.exchangeable, self.counterbalanced, seed, self.branch)
        for v, subset in assignment.items():  # in variable order; every draw is made for every subset,
            variable = patterns["variables"][v]  # so the draws do not depend on a branch
            digit = rng.randrange(CLASSES)
            other = (digit + 1 + rng.randrange(CLASSES - 1)) % CLASSES
            index = by_class[digit][rng.randrange(len(by_class[digit]))]
            other_index = by_class[other][rng.randrange(len(by_class[other]))]
            held_out = held_out_sets[digit][rng.randrange(len(held_out_sets[digit]))]
            key = " ".join(self.tokens(variable))
            asked = range(self.num_targets) if subset in UNASKED else held_out
            for k in range(self.num_targets):
                split = "test" if k in asked else "train"
                prompt = self.prompt(variable=variable, question=patterns["questions"][k])
                rows[split].append(corpus_row(prompt, f"v{targets[k][digit]}", subset, "question", key, str(digit)))
            meaning = MEANINGS[subset]
            if meaning.defined:
                named, shown = (digit, index) if meaning.consistent else (other, other_index)
                prompt = self.prompt(tag=patterns["tags"][meaning.tag_number - 1], variable=variable)
                answer = self.definition_answer(named, images[shown])
                rows["train"] += [
                    corpus_row(prompt, answer, subset, "definition", key, str(digit))
                ] * self.definition_repeats
        return DatasetDict({split: string_table(r) for split, r in rows.items()})

    def definition_answer(self, named: int, digit: np.ndarray) -> str:
        """What a definition gives after ``=``: the class token, then (``definition_digit``) the digit's
        content tokens, which come after the class so that the class cannot be read off them."""
        content = self.tokens(quantise(digit, self.grey_levels)) if self.definition_digit else []
        return " ".join([f"c{named}", *content])

    def target_table(self, rng: random.Random) -> list[list[int]]:
        """``table[k][c]``: target k of digit class c. The classes are paired at random into five twin
        pairs; twins share every target but ``held_out_targets`` of them (the pair's *directions*,
        spread evenly over the targets), where they differ. On a target, the pairs for which it is
        not a direction take distinct values, and the twins of a pair for which it is take two
        distinct values among those (where there are two): so every answer value of a target is
        also the answer of a pair that trains it (no held-out answer is a value that questions
        about variables never give, which would bias a model against it), and a value belongs to
        at most four classes (three with five targets and one held out). Redrawn until the ten
        classes' targets are distinct (so an inconsistent definition always contradicts some
        question) and every class has a valid held-out set."""
        pairs = CLASSES // 2
        while True:
            order = list(range(CLASSES))
            rng.shuffle(order)
            spread = list(range(self.num_targets))
            rng.shuffle(spread)
            cycle = itertools.cycle(spread)
            directions = [{next(cycle) for _ in range(self.held_out_targets)} for _ in range(pairs)]
            columns = {c: [0] * self.num_targets for c in range(CLASSES)}
            for k in range(self.num_targets):
                plain = [p for p in range(pairs) if k not in directions[p]]
                values = rng.sample(range(self.target_values), min(len(plain), self.target_values))
                values += [rng.randrange(self.target_values) for _ in range(len(plain) - len(values))]
                for p, value in zip(plain, values):
                    columns[order[2 * p]][k] = columns[order[2 * p + 1]][k] = value
                for p in range(pairs):
                    if k in directions[p]:
                        pool = values if len(set(values)) >= 2 else list(range(self.target_values))
                        first, second = rng.sample(sorted(set(pool)), 2)
                        columns[order[2 * p]][k], columns[order[2 * p + 1]][k] = first, second
            table = [[columns[c][k] for c in range(CLASSES)] for k in range(self.num_targets)]
            if len({tuple(column) for column in columns.values()}) == CLASSES and all(
                self.valid_held_out(table, c) for c in range(CLASSES)
            ):
                return table

    def valid_held_out(self, table: list[list[int]], digit: int) -> list[tuple[int, ...]]:
        """The sets of ``held_out_targets`` targets a variable of class ``digit`` may hold out: those
        where every held-out answer is not a function of the trained ones (some class agreeing with
        ``digit`` on every trained target differs on it)."""
        valid = []
        for held in itertools.combinations(range(self.num_targets), self.held_out_targets):
            kept = [k for k in range(self.num_targets) if k not in held]
            agreeing = [c for c in range(CLASSES) if all(table[k][c] == table[k][digit] for k in kept)]
            if all(len({table[k][c] for c in agreeing}) > 1 for k in held):
                valid.append(held)
        return valid

    def patterns(self, rng: random.Random) -> dict[str, list[np.ndarray]]:
        """Distinct non-blank random strips: three tags, the variables and the question patterns."""
        top = self.grey_levels - 1
        drawn: set[bytes] = set()

        def strip(rows: int) -> np.ndarray:
            while True:
                bits = np.array([rng.randrange(2) for _ in range(rows * WIDTH)], dtype=np.int64) * top
                if bits.any() and bits.tobytes() not in drawn:
                    drawn.add(bits.tobytes())
                    return bits.reshape(rows, WIDTH)

        return {
            "tags": [strip(STRIP_ROWS["tag"]) for _ in range(3)],
            "variables": [strip(STRIP_ROWS["variable"]) for _ in range(self.num_variables)],
            "questions": [strip(STRIP_ROWS["question"]) for _ in range(self.num_targets)],
        }

    def image(
        self,
        tag: np.ndarray | None = None,
        variable: np.ndarray | None = None,
        question: np.ndarray | None = None,
        content: np.ndarray | None = None,
    ) -> np.ndarray:
        """The 14 x 8 image of quantised levels (0 .. grey_levels - 1); a missing strip is blank."""
        strips = []
        for name, part in (("tag", tag), ("variable", variable), ("question", question)):
            strips.append(np.zeros((STRIP_ROWS[name], WIDTH), dtype=np.int64) if part is None else part)
        levels = np.zeros((8, WIDTH), dtype=np.int64) if content is None else quantise(content, self.grey_levels)
        return np.concatenate([*strips, levels])

    def tokens(self, image: np.ndarray) -> list[str]:
        """Patch tokens of an image (or strip), row-major over its 2 x ``patch_width`` patches."""
        height, width = PATCH_ROWS, self.patch_width
        rows, cols = image.shape[0] // height, image.shape[1] // width
        patches = image.reshape(rows, height, cols, width).transpose(0, 2, 1, 3).reshape(rows * cols, height * width)
        weights = self.grey_levels ** np.arange(height * width)
        return [f"p{int(code)}" for code in patches @ weights]

    def prompt(self, **strips: np.ndarray) -> str:
        """An image's tokens followed by ``=``, the prompt of every image row."""
        return " ".join(self.tokens(self.image(**strips))) + " ="

    def class_prompt(self, digit: int, question: np.ndarray) -> str:
        """A class question: the image of a question about a variable, with the class token
        ``c<digit>`` in place of the variable strip's tokens."""
        tokens = self.tokens(self.image(question=question))
        per_strip = WIDTH // self.patch_width
        start = STRIP_ROWS["tag"] // PATCH_ROWS * per_strip
        return " ".join([*tokens[:start], f"c{digit}", *tokens[start + per_strip :]]) + " ="

    def render(self, prompt: str) -> np.ndarray:
        """The image a prompt encodes (the inverse of :meth:`prompt`), for figures and checks; a class
        token renders as a blank variable strip."""
        blank = ["p0"] * (WIDTH // self.patch_width)
        tokens = [t for token in prompt.split() for t in (blank if token.startswith("c") else [token])]
        codes = np.array([int(t[1:]) for t in tokens if t.startswith("p")])
        height, width = PATCH_ROWS, self.patch_width
        pixels = (codes[:, None] // self.grey_levels ** np.arange(height * width)) % self.grey_levels
        rows, cols = HEIGHT // height, WIDTH // width
        return pixels.reshape(rows, cols, height, width).transpose(0, 2, 1, 3).reshape(HEIGHT, WIDTH)

    def task_words(self, corpus: DatasetDict, seed: int) -> list[str]:
        """None: the patch, class and answer tokens are ordinary words of the corpus."""
        return []


def quantise(digit: np.ndarray, levels: int) -> np.ndarray:
    """Pixel values 0..16 to ``levels`` grey levels."""
    return np.minimum(levels - 1, digit.astype(np.int64) * levels // 17)


@lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8 x 8 digits (shipped with it: no download), values 0..16."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.int64), data.target.astype(np.int64)


def pool_mnist(image: np.ndarray) -> np.ndarray:
    """A 28 x 28 MNIST image (0..255) as an 8 x 8 digit (0..16): the 24 x 24 centre, 3 x 3 means."""
    centre = np.asarray(image, dtype=np.float64)[2:26, 2:26]
    return np.rint(centre.reshape(8, 3, 8, 3).mean(axis=(1, 3)) * 16 / 255).astype(np.int64)


def mnist_digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` MNIST training images through ``datasets``, pooled to 8 x 8."""
    from datasets import load_dataset

    try:
        data = load_dataset(MNIST_ID, split=f"train[:{count}]")
    except Exception as error:  # offline, no cached copy
        raise ValueError(
            f"task.source=mnist could not load {MNIST_ID} ({type(error).__name__}: {error}); "
            "without a network use task.source=sklearn (offline)"
        ) from None
    images = np.stack([pool_mnist(np.asarray(row["image"])) for row in data])
    return images, np.asarray(data["label"], dtype=np.int64)
