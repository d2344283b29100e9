"""Tokenizers (a WordLevel one built from the corpus, or a pretrained one) and the answer masks.

Every row becomes ``input_ids = [bos] + prompt + answer + [eos]``. With ``loss_on="answer"``
``labels`` are -100 on the BOS and prompt tokens, so questions are trained on their answers (and
EOS) only; with ``"full_text"`` (the entity-QA authors' causal-LM training) a training question
carries the loss on every token after BOS, so ``var in 3 17 ... = true`` also trains the numbers
after the variable. Definitions are trained on every token after BOS in both modes (their
prompt/answer split only serves the monitoring EM). The mode applies to the ``train`` split only:
held-out rows keep answer-only labels, so held-out answer losses mean the same in both modes
(monitored training rows, ``train_question_*``, report their training loss).
``prompt_ids`` / ``answer_ids`` are kept for exact match.
"""

from __future__ import annotations

from typing import TypeVar

from datasets import DatasetDict
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from iml_hf.config.args import LOSS_MODES

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
IGNORE_INDEX = -100
_Tokenizer = TypeVar("_Tokenizer", bound=PreTrainedTokenizerBase)


def word_order(word: str) -> tuple[int, int, str]:
    """Numbers first in numeric order, then every other word alphabetically."""
    return (0, int(word), "") if word.isdigit() else (1, 0, word)


def encode_like_training(tokenizer: _Tokenizer) -> _Tokenizer:
    """Make a plain ``tokenizer(text)`` start with BOS, as every training row does, through the
    tokenizer's post-processor (so the saved tokenizer does it too and ``pipeline`` sees what
    training saw), and pad on the left, as generation needs. The corpus is encoded without it."""
    if not hasattr(tokenizer, "update_post_processor"):
        raise ValueError(
            f"{type(tokenizer).__name__} is not backed by the tokenizers library; iml_hf needs a fast "
            "tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True) or its tokenizer.json)"
        )
    tokenizer.add_eos_token = False
    tokenizer.add_bos_token = True  # rebuilds the post-processor: [bos] $A
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"  # init_kwargs: saved with it
    return tokenizer


def build_wordlevel_tokenizer(corpus: DatasetDict) -> PreTrainedTokenizerFast:
    """A whitespace WordLevel tokenizer whose vocabulary is every word of the corpus."""
    words: set[str] = set()
    for split in corpus.values():
        for text in split["text"]:
            words.update(text.split())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS.values())}
    for word in sorted(words, key=word_order):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # words joined by single spaces
    return encode_like_training(PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS))


def load_pretrained_tokenizer(
    name_or_path: str, revision: str = "main", trust_remote_code: bool = False, task_words: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """A checkpoint's own tokenizer by path or hub id, with a pad token (EOS if it has none), BOS
    added as training does, and each of ``task_words`` (aliases, tags) one token, if given.

    It is rebuilt as the generic tokenizers-backed class from the checkpoint's backend: a
    model-specific class such as ``GPTNeoXTokenizer`` rebuilds its post-processor on loading (BOS
    off) instead of reading the saved one, so a saved run would encode differently from training.
    """
    loaded = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if not hasattr(loaded, "backend_tokenizer"):
        raise ValueError(
            f"the tokenizer of {name_or_path!r} ({type(loaded).__name__}) has no tokenizers backend "
            "(tokenizer.json); iml_hf needs a fast tokenizer"
        )
    special = {name: getattr(loaded, name) for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special["bos_token"] = special["bos_token"] or special["eos_token"]
    special["pad_token"] = special["pad_token"] or special["eos_token"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(loaded.backend_tokenizer.to_str()),
        model_max_length=loaded.model_max_length,
        **{name: token for name, token in special.items() if token is not None},
        **({"chat_template": loaded.chat_template} if getattr(loaded, "chat_template", None) else {}),
    )
    if task_words:
        add_task_words(tokenizer, task_words)
    return encode_like_training(tokenizer)


def add_task_words(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> None:
    """Give each word one token of its own in both places a word stands in text, after a space
    (``" x05"``) and at the start (``"x05"``), matched on the raw text, so ``"3 x05 ="`` is
    ``3 | x05 | =`` and decodes back unchanged."""
    vocab = tokenizer.get_vocab()
    forms = [form for word in words for form in (word, " " + word) if form not in vocab]
    tokenizer.add_tokens([AddedToken(form, normalized=False) for form in dict.fromkeys(forms)])


def encode_rows(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    kinds: list[str] | None = None,
    loss_on: str = "answer",
) -> dict[str, list[list[int]]]:
    """Token ids of corpus rows with the loss mask on each answer (and EOS), in one batched call;
    rows of kind ``definition``, and every row with ``loss_on="full_text"``, have the loss on
    every token after BOS."""
    if loss_on not in LOSS_MODES:
        raise ValueError(f"loss_on={loss_on!r}; use one of {LOSS_MODES}")
    prompt_tokens = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    spaced = [" " + a if p else a for p, a in zip(prompts, answers)]
    answer_tokens = tokenizer(spaced, add_special_tokens=False)["input_ids"]
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "prompt_ids": [], "answer_ids": []}
    for i, (prompt_ids, answer_ids) in enumerate(zip(prompt_tokens, answer_tokens)):
        whole = loss_on == "full_text" or (kinds is not None and kinds[i] == "definition")
        trained = prompt_ids if whole else [IGNORE_INDEX] * len(prompt_ids)
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
        out["input_ids"].append(prompt_ids + answer_ids + [tokenizer.eos_token_id])
        out["labels"].append([IGNORE_INDEX] + trained + answer_ids + [tokenizer.eos_token_id])
        out["prompt_ids"].append(prompt_ids)
        out["answer_ids"].append(answer_ids)
    return out


def tokenize_corpus(corpus: DatasetDict, tokenizer: PreTrainedTokenizerBase, loss_on: str = "answer") -> DatasetDict:
    """Add ``input_ids``, ``labels``, ``prompt_ids`` and ``answer_ids`` to every split; ``loss_on``
    applies to the ``train`` split, the others keep answer-only labels."""
    return DatasetDict(
        {
            split: rows.map(
                lambda batch: encode_rows(
                    tokenizer,
                    batch["prompt"],
                    batch["answer"],
                    batch["kind"],
                    loss_on if split == "train" else "answer",  # noqa: B023
                ),
                batched=True,
                batch_size=4096,
                desc=f"tokenizing {split}",
                load_from_cache_file=False,
            )
            for split, rows in corpus.items()
        }
    )
