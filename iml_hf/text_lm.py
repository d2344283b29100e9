"""Train a small GPT-2-style causal LM from scratch on text that ships with Python (no download).

    python -m iml_hf.text_lm --output_dir runs/text_lm [--max_steps 2000] [--num_layers 4]

The corpus is the Python documentation bundled in the standard library (``pydoc_data.topics``,
about 65k words of English and code): every tenth topic is held out. A byte-level BPE tokenizer is
trained on the training topics, the text is cut into blocks of ``seq_len`` tokens (run_clm's
``group_texts``) and a GPT-2 model from ``GPT2Config`` is trained with the ``transformers``
Trainer. The folder then holds the model and tokenizer (``from_pretrained`` loads them),
``train.txt``, ``heldout.txt`` and ``results.json``; ``python -m iml_hf.analyze layers --model DIR
--data DIR/heldout.txt`` analyses it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from iml_hf.utils.io import remove_empty_dirs

SPECIAL = "<|endoftext|>"


def python_docs_text(heldout_every: int = 10) -> tuple[str, str]:
    """(training text, held-out text) from the standard library's documentation topics."""
    from pydoc_data.topics import topics

    texts = list(dict.fromkeys(topics[n] for n in sorted(topics)))  # some topics share one text
    train = [t for i, t in enumerate(texts) if i % heldout_every]
    heldout = [t for i, t in enumerate(texts) if i % heldout_every == 0]
    return "\n\n".join(train), "\n\n".join(heldout)


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on ``text``."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL)


def blocks(text: str, tokenizer: PreTrainedTokenizerFast, seq_len: int) -> Dataset:
    """The text as consecutive blocks of ``seq_len`` tokens (the remainder is dropped)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = len(ids) // seq_len
    chunks = [ids[i * seq_len : (i + 1) * seq_len] for i in range(count)]
    return Dataset.from_dict({"input_ids": chunks, "labels": chunks})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.text_lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--max_steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch_threads", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    out = Path(args.output_dir)
    set_seed(args.seed)
    train_text, heldout_text = python_docs_text()
    tokenizer = train_tokenizer(train_text, args.vocab_size)
    train, heldout = blocks(train_text, tokenizer, args.seq_len), blocks(heldout_text, tokenizer, args.seq_len)
    config = GPT2Config(
        n_layer=args.num_layers,
        n_embd=args.hidden_size,
        n_head=args.num_heads,
        n_positions=args.seq_len,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    training = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=0.1,
        warmup_steps=min(100, args.max_steps // 10),
        lr_scheduler_type="cosine",
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train,
        eval_dataset=heldout,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    output = trainer.train()
    evaluation = trainer.evaluate()
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    (out / "train.txt").write_text(train_text)
    (out / "heldout.txt").write_text(heldout_text)
    results = {
        "train_loss": output.training_loss,
        "heldout_loss": evaluation["eval_loss"],
        "heldout_perplexity": math.exp(evaluation["eval_loss"]),
        "train_blocks": len(train),
        "heldout_blocks": len(heldout),
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_time_s": output.metrics["train_runtime"],
        "args": vars(args),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    remove_empty_dirs(out / "checkpoints")
    print(
        f"held-out loss {results['heldout_loss']:.3f} (perplexity {results['heldout_perplexity']:.1f}); saved to {out}"
    )
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
