"""What a run reads, prepared once: the corpus (built or loaded, by the main process first), its
tokenizer, the tokenized corpus and the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelerate import PartialState
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from iml_hf.config.validation import RecipeError
from iml_hf.data.corpus import load_corpus_dataset, load_or_build_corpus
from iml_hf.data.tokenization import build_wordlevel_tokenizer, load_pretrained_tokenizer, tokenize_corpus
from iml_hf.tasks import eval_set_name, eval_set_order

if TYPE_CHECKING:
    from iml_hf.config.recipe import Recipe


@dataclass
class RunData:
    """Everything a run's stages read: the corpus, tokenizer, tokenized corpus, evaluation sets and
    each switched-on measurement's inputs."""

    corpus: DatasetDict
    tokenizer: PreTrainedTokenizerBase
    tokenized: DatasetDict
    evaluation: dict[str, Dataset]
    inputs: dict[str, Any]


def eval_sets(tokenized: DatasetDict, recipe: Recipe) -> dict[str, Dataset]:
    """Rows per evaluation set (a fixed random sample when capped): held-out rows grouped by
    subset and kind (``<subset>``, ``assoc_<subset>``) in the task's subset order, then with
    ``monitor_train`` the training questions and definitions per subset (``train_<kind>_<subset>``)."""
    groups: dict[str, list[int]] = {}
    test = tokenized["test"]
    for i, (subset, kind) in enumerate(zip(test["subset"], test["kind"])):
        groups.setdefault(eval_set_name(subset, kind), []).append(i)
    names = eval_set_order(list(groups), list(recipe.task.subsets))
    sources = {name: (test, groups[name]) for name in names}
    train = tokenized["train"]
    monitored: dict[str, list[int]] = {}
    for i, (subset, kind) in enumerate(zip(train["subset"], train["kind"])):
        if kind in ("question", "definition"):
            monitored.setdefault(f"train_{kind}_{subset}", []).append(i)
    if recipe.evaluation.monitor_train:
        names += eval_set_order(list(monitored), list(recipe.task.subsets))
    sources.update({name: (train, indices) for name, indices in monitored.items()})
    names += [n for n in recipe.evaluation.extra_subsets or [] if n not in names]
    requested = recipe.evaluation.subsets or recipe.evaluation.extra_subsets
    if requested:
        missing = [n for n in requested if n not in sources]
        if missing:
            key = "subsets" if recipe.evaluation.subsets else "extra_subsets"
            raise ValueError(
                f"evaluation.{key} names {missing}, which this corpus does not have; it has {sorted(sources)}"
            )
        names = list(recipe.evaluation.subsets or names)
    sets = {}
    for name in names:
        split, indices = sources[name]
        rows = split.select(indices)
        if name.startswith("train_definition_"):  # a repeated definition is one example
            first = {text: i for i, text in reversed(list(enumerate(rows["text"])))}
            rows = rows.select(sorted(first.values()))
        cap = recipe.evaluation.max_examples_per_subset
        if cap and len(rows) > cap:
            rows = rows.shuffle(seed=0).select(range(cap))
        sets[name] = rows
    return sets


def load_tokenizer(recipe: Recipe, corpus: DatasetDict) -> PreTrainedTokenizerBase:
    """The checkpoint's (or ``tokenizer_name_or_path``'s) tokenizer, with the task's invented words
    as tokens when ``add_task_tokens``; else a WordLevel tokenizer built from the corpus."""
    model = recipe.model
    name = model.tokenizer_name_or_path or model.model_name_or_path
    if not name:
        return build_wordlevel_tokenizer(corpus)
    words = recipe.task.task_words(corpus, recipe.run.seed) if model.add_task_tokens else None
    revision = model.revision if name == model.model_name_or_path else "main"
    return load_pretrained_tokenizer(name, revision, model.trust_remote_code, words)


def prepare_data(
    recipe: Recipe, state: PartialState | None = None
) -> tuple[DatasetDict, PreTrainedTokenizerBase, DatasetDict]:
    """The recipe's corpus (built once, by the main process first), its tokenizer and the tokenized corpus."""
    state = state or PartialState()
    with state.main_process_first():
        if recipe.run.corpus_dataset:  # a published corpus (a Hub id or a folder), checked against the task
            corpus = load_corpus_dataset(
                recipe.run.corpus_dataset,
                recipe.task,
                recipe.run.seed,
                recipe.run.corpus_revision,
                recipe.run.cache_dir,
            )
        else:
            corpus = load_or_build_corpus(recipe.task, recipe.run.seed, recipe.run.cache_dir)
    try:
        tokenizer = load_tokenizer(recipe, corpus)
    except OSError as error:  # no such folder or hub id, offline without a cached copy, a bad revision
        raise RecipeError(
            f"model.model_name_or_path={recipe.model.model_name_or_path!r} (tokenizer "
            f"{recipe.model.tokenizer_name_or_path!r}) cannot be loaded: {error}"
        ) from None
    return corpus, tokenizer, tokenize_corpus(corpus, tokenizer, recipe.model.loss_on or "answer")
