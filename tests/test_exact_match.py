"""Batched exact match agrees with per-example ``model.generate(do_sample=False)``."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, TrainingArguments

from iml_hf.measure.callbacks.subset_em import SubsetEMCallback
from iml_hf.measure.exact_match import exact_match, greedy_answers
from iml_hf.training.trainer import IMLTrainer
from iml_hf.utils.io import MetricsLog

PAD, EOS = 0, 3


def _reference(model, prompts, answers):
    """EM by one unbatched greedy generate call per example."""
    out = []
    for prompt, answer in zip(prompts, answers):
        ids = torch.tensor([prompt])
        generated = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=len(answer),
            pad_token_id=PAD,
            eos_token_id=EOS,
        )[0, len(prompt) :].tolist()
        out.append(generated[: len(answer)] == answer)
    return out


def _planted(model, prompts, n_answer, correct_share=0.5, seed=0):
    """Answers of which about half are the model's own greedy output (so EM is neither 0 nor 1)."""
    g = torch.Generator().manual_seed(seed)
    answers = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        greedy = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n_answer,
            pad_token_id=PAD,
            eos_token_id=None,
        )[0, len(prompt) :].tolist()
        if torch.rand(1, generator=g).item() > correct_share:
            greedy[-1] = (greedy[-1] + 1) % 40 + 4
        answers.append(greedy)
    return answers


def _models():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=48,
            n_positions=32,
            n_embd=16,
            n_layer=2,
            n_head=2,
            pad_token_id=PAD,
            eos_token_id=EOS,
            bos_token_id=2,
        )
    ).eval()
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=48,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=32,
            pad_token_id=PAD,
            eos_token_id=EOS,
            bos_token_id=2,
        )
    ).eval()
    return [gpt2, llama]


def _prompts(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        [2] + torch.randint(4, 48, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def test_single_token_answers_match_generate():
    for model in _models():
        prompts = _prompts()
        answers = _planted(model, prompts, 1)
        ours = exact_match(model, prompts, answers, pad_token_id=PAD, eos_token_id=EOS, batch_size=7)
        assert ours == _reference(model, prompts, answers)
        assert 0 < sum(ours) < len(ours)


def test_multi_token_answers_match_generate():
    for model in _models():
        prompts = _prompts(seed=2)
        answers = [a for a in _planted(model, prompts, 3, seed=3)]
        answers[0] = answers[0][:2]  # mixed answer lengths in one batch
        ours = exact_match(model, prompts, answers, pad_token_id=PAD, eos_token_id=EOS, batch_size=5)
        assert ours == _reference(model, prompts, answers)
        assert 0 < sum(ours) < len(ours)


def test_greedy_answers_are_the_tokens_exact_match_judged():
    """The predictions (samples.jsonl's) are generate's first len(answer) tokens; match iff equal."""
    for model in _models():
        prompts = _prompts(seed=4)
        answers = _planted(model, prompts[:12], 1, seed=5) + _planted(model, prompts[12:], 3, seed=6)
        correct, predicted = greedy_answers(model, prompts, answers, pad_token_id=PAD, eos_token_id=EOS, batch_size=5)
        for prompt, answer, tokens in zip(prompts, answers, predicted):
            ids = torch.tensor([prompt])
            expected = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=len(answer),
                pad_token_id=PAD,
                eos_token_id=EOS,
            )[0, len(prompt) :].tolist()[: len(answer)]
            assert tokens == expected
        assert correct == [t == a for t, a in zip(predicted, answers)] == _reference(model, prompts, answers)
        assert 0 < sum(correct) < len(correct)


def test_callback_logs_and_appends_metrics(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2))
    prompts = [[2, 4 + i % 8, 5, 29] for i in range(20)]
    answers = _planted(model, prompts, 1, seed=4)
    data = Dataset.from_dict({"prompt_ids": prompts, "answer_ids": answers})
    trainer = IMLTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
        processing_class=tiny_tokenizer,
        stage_name="x2",
        stage_index=2,
        step_offset=40,
    )
    callback = SubsetEMCallback(trainer, {"x2t": data}, MetricsLog(tmp_path / "metrics.jsonl"), loss=False)
    scores = callback.measure(trainer.state)
    expected = sum(_reference(model, prompts, answers)) / len(prompts)
    assert scores == {"x2t": expected}
    assert trainer.state.log_history[-1]["eval/x2t/em"] == expected
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert (row["stage"], row["global_step"], row["subset"], row["value"]) == ("x2", 40, "x2t", expected)


def test_answer_loss_matches_the_models_own_loss_per_example(tiny_tokenizer):
    """The per-set loss is each example's mean CE on its labelled tokens, as HF computes it unpadded."""
    from iml_hf.measure.callbacks.subset_em import answer_losses

    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2))
    inputs = [[2, 4, 5, 6, 3], [2, 7, 8, 3], [2, 9, 3]]
    labels = [[-100, -100, -100, 6, 3], [-100, 7, 8, 3], [-100, -100, 3]]
    ours = answer_losses(model, inputs, labels, pad_id=0, batch_size=2)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = [
            model(input_ids=torch.tensor([i]), labels=torch.tensor([target])).loss.item()
            for i, target in zip(inputs, labels)
        ]
    assert ours == pytest.approx(expected, abs=1e-5)
