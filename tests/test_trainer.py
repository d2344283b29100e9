"""IMLTrainer: stage-aware logging and an optimizer that restarts or carries over."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from iml_hf.config.args import StageArguments
from iml_hf.data.collators import PadCollator, stage_train_set
from iml_hf.data.tokenization import tokenize_corpus
from iml_hf.training.trainer import IMLTrainer


def _trainer(tmp_path, model, train_set, tokenizer, lr, weight_decay=0.0, **kw):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        learning_rate=lr,
        report_to="none",
        weight_decay=weight_decay,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    return IMLTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=PadCollator(tokenizer.pad_token_id),
        **kw,
    )


def test_optimizer_carries_over_or_restarts(tmp_path, tiny_corpus, tiny_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2))
    train = stage_train_set(
        tokenize_corpus(tiny_corpus, tiny_tokenizer)["train"],
        StageArguments(name="p", train_subsets=["pretrain"]),
        seed=0,
    )
    first = _trainer(tmp_path, model, train, tiny_tokenizer, 1e-3, stage_name="pretrain")
    first.train()
    optimizer = first.unwrapped_optimizer()
    step_counts = {id(p): int(s["step"]) for p, s in optimizer.state.items()}
    assert set(step_counts.values()) == {3}

    carried = _trainer(
        tmp_path,
        model,
        train,
        tiny_tokenizer,
        5e-4,
        weight_decay=0.5,
        stage_name="x1",
        stage_index=1,
        step_offset=3,
        carried_optimizer=optimizer,
    )
    carried.train()
    assert carried.unwrapped_optimizer() is optimizer
    assert {int(s["step"]) for s in optimizer.state.values()} == {6}  # Adam moments continued
    assert carried.state.log_history[0]["total_step"] == 4.0
    assert carried.state.log_history[0]["stage_index"] == 1.0
    assert max(g["initial_lr"] for g in optimizer.param_groups) == 5e-4
    # the stage's weight decay reaches the decayed group, not the norms and biases
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.5]

    fresh = _trainer(tmp_path, model, train, tiny_tokenizer, 5e-4, stage_name="x2", stage_index=2, step_offset=6)
    fresh.train()
    assert fresh.unwrapped_optimizer() is not optimizer
    assert {int(s["step"]) for s in fresh.unwrapped_optimizer().state.values()} == {3}
    assert fresh.position()["global_step"] == 9


def test_resuming_a_tied_model_warns_of_no_missing_weight(tmp_path, tiny_corpus, tiny_tokenizer):
    """GPT-2's lm_head is tied to the input embeddings and saved once: a resume from a checkpoint
    must not warn that ``lm_head.weight`` is missing, and the head stays tied to the loaded embeddings."""
    import logging

    from transformers.utils import logging as hf_logging

    from iml_hf.training.trainer import make_resumable

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2)
    train = stage_train_set(
        tokenize_corpus(tiny_corpus, tiny_tokenizer)["train"],
        StageArguments(name="p", train_subsets=["pretrain"]),
        seed=0,
    )
    first = _trainer(tmp_path, GPT2LMHeadModel(config), train, tiny_tokenizer, 1e-3)
    make_resumable(first.args, 3)
    first.train()
    checkpoint = tmp_path / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists()

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, root = Keep(level=logging.WARNING), logging.getLogger("transformers")
    root.addHandler(handler)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        torch.manual_seed(1)
        resumed = _trainer(tmp_path / "again", GPT2LMHeadModel(config), train, tiny_tokenizer, 1e-3)
        resumed.args.max_steps = 4
        resumed.train(resume_from_checkpoint=str(checkpoint))
    finally:
        hf_logging.set_verbosity(verbosity)
        root.removeHandler(handler)
    assert not [m for m in records if "missing keys" in m], records
    model = resumed.model
    assert model.lm_head.weight is model.transformer.wte.weight
