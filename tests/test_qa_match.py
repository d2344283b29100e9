"""The ``qa_match`` metric against hand-worked SQuAD scores, and ``generate_answers`` against an
unpadded one-example-at-a-time greedy loop."""

from __future__ import annotations

import evaluate
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.data.tokenization import build_wordlevel_tokenizer, encode_rows
from iml_hf.measure.exact_match import greedy_continuations
from iml_hf.measure.qa_match import QA_METRIC_PATH, generate_answers, load_qa_metric, normalize_answer, score_answers

QUESTIONS = ["when was the tower built ?", "in which country is the river rhine mostly ?"]
ANSWERS = ["1870s", "Germany"]

# (prediction, reference, EM, F1), each worked by hand.
CASES = [
    ("the Eiffel Tower!", "Eiffel tower", 1.0, 1.0),
    ("in 1870s", "1870s", 0.0, 2 * (1 * 0.5) / (1 + 0.5)),  # P = 1/2, R = 1
    ("Germany", "france;germany", 1.0, 1.0),
    ("southern germany", "france; Germany", 0.0, 2 / 3),  # best of the two: P = 1/2, R = 1
    ("", "male", 0.0, 0.0),
    ("the old town hall of Berlin", "Berlin Town Hall", 0.0, 0.75),  # 3 common; P = 3/5, R = 1
    ("the old town hall of Berlin", "Berlin Town-Hall", 0.0, 2 / 7),  # "townhall": P = 1/5, R = 1/2
    ("new new york", "New York City", 0.0, 2 / 3),  # common = {new: 1, york: 1}; P = R = 2/3
    ("Paris", "London", 0.0, 0.0),
]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_normalize_answer():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_metric_loaded_by_path_matches_hand_computed(offline):
    metric = evaluate.load(str(QA_METRIC_PATH), keep_in_memory=True)
    predictions, references, em, f1 = map(list, zip(*CASES))
    out = metric.compute(predictions=predictions, references=references, per_example=True)
    assert out["exact_match_per_example"] == em
    assert out["f1_per_example"] == pytest.approx(f1)
    assert out["exact_match"] == pytest.approx(sum(em) / len(em))
    assert out["f1"] == pytest.approx(sum(f1) / len(f1))
    plain = evaluate.load(str(QA_METRIC_PATH / "qa_match.py")).compute(predictions=predictions, references=references)
    assert set(plain) == {"exact_match", "f1"} and plain["f1"] == pytest.approx(out["f1"])


def test_score_answers_and_cached_loader(offline):
    assert load_qa_metric() is load_qa_metric()
    predictions, references, em, f1 = map(list, zip(*CASES))
    scores = score_answers(predictions, references)
    assert scores["em"] == em and scores["f1"] == pytest.approx(f1)
    assert score_answers([], []) == {"em": [], "f1": []}
    with pytest.raises(ValueError):
        score_answers(["a"], [])


@pytest.fixture(scope="module")
def qa_tokenizer():
    text = [q + " " + a for q, a in zip(QUESTIONS, ANSWERS)] + ["male female france paris"]
    return build_wordlevel_tokenizer(DatasetDict({"train": Dataset.from_dict({"text": text})}))


def _tiny_gpt2(tokenizer, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1,
        n_embd=16,
        n_head=2,
        n_positions=32,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return GPT2LMHeadModel(config)


@torch.no_grad()
def _reference_greedy(model, prompt: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
    """Unpadded greedy decoding, one example: append the argmax until EOS (kept) or the limit."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        if ids[-1] == eos_id:
            break
    return ids[len(prompt) :]


def test_greedy_continuations_match_unpadded_loop(qa_tokenizer):
    model = _tiny_gpt2(qa_tokenizer, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    vocab = len(qa_tokenizer)
    prompts = [
        [qa_tokenizer.bos_token_id] + torch.randint(4, vocab, (n,), generator=g).tolist() for n in (1, 7, 3, 5, 2, 6, 4)
    ]
    # An EOS the model emits mid-continuation for one prompt, so some rows stop early.
    eos = _reference_greedy(model, prompts[1], 3, None)[2]
    expected = [_reference_greedy(model, p, 6, eos) for p in prompts]
    assert any(len(e) < 6 for e in expected)
    got = greedy_continuations(model, prompts, 6, pad_id=qa_tokenizer.pad_token_id, eos_id=eos, batch_size=3)
    assert got == expected


def test_generate_answers_match_unpadded_loop(qa_tokenizer):
    model = _tiny_gpt2(qa_tokenizer, seed=2)
    model.train()
    prompts = encode_rows(qa_tokenizer, QUESTIONS + ["when was", "river"], ANSWERS + ["x", "x"])["prompt_ids"]
    eos = qa_tokenizer.eos_token_id
    model.eval()
    expected = []
    for p in prompts:
        tokens = _reference_greedy(model, p, 4, eos)
        expected.append(qa_tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=True).strip())
    model.train()
    assert generate_answers(model, qa_tokenizer, prompts, max_new_tokens=4, batch_size=3) == expected
    assert model.training


def _trained_on_questions(tokenizer) -> tuple[GPT2LMHeadModel, dict[str, list[list[int]]]]:
    """A tiny GPT-2 trained on the two questions (150 full-batch AdamW steps), and their encoded rows."""
    model = _tiny_gpt2(tokenizer)
    rows = encode_rows(tokenizer, QUESTIONS, ANSWERS)
    width = max(len(r) for r in rows["input_ids"])
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows["input_ids"]])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows["labels"]])
    mask = (torch.arange(width) < torch.tensor([len(r) for r in rows["input_ids"]])[:, None]).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    return model, rows


def test_trained_model_answers_and_scores(qa_tokenizer, offline):
    """Trained on two questions, greedy decoding gives their answers and stops at EOS."""
    model, rows = _trained_on_questions(qa_tokenizer)
    answers = generate_answers(model, qa_tokenizer, rows["prompt_ids"], max_new_tokens=5)
    assert answers == ANSWERS
    assert model.training
    assert score_answers(answers, ["1870s", "france;germany"]) == {"em": [1.0, 1.0], "f1": [1.0, 1.0]}


def test_stage_end_samples_hold_the_generated_answers_and_their_match(qa_tokenizer, offline, tmp_path):
    """With text answers, samples.jsonl rows carry the decoded greedy answer, the example's EM as
    ``match`` and its F1; the mean of ``match`` is the logged EM; interval evaluations keep none."""
    import json

    from transformers import TrainerControl, TrainingArguments

    from iml_hf.measure.callbacks.subset_em import SubsetEMCallback
    from iml_hf.training.trainer import IMLTrainer
    from iml_hf.utils.io import MetricsLog

    model, rows = _trained_on_questions(qa_tokenizer)
    references = ["1870s", "France"]  # the second answer is wrong on purpose
    data = Dataset.from_dict(
        {"prompt": QUESTIONS, "answer": references, "prompt_ids": rows["prompt_ids"], "answer_ids": rows["answer_ids"]}
    )
    trainer = IMLTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
        processing_class=qa_tokenizer,
        stage_name="x2",
        stage_index=2,
    )
    callback = SubsetEMCallback(
        trainer, {"qd1consis": data}, MetricsLog(tmp_path / "metrics.jsonl"), answer_match="text", loss=False
    )
    callback.measure(trainer.state)  # an interval evaluation: no samples
    assert callback.samples == []
    callback.on_train_end(trainer.args, trainer.state, TrainerControl())
    callback.write_samples(tmp_path / "samples.jsonl")
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    keys = ("stage", "subset", "index", "prompt", "answer", "prediction", "match")
    assert [tuple(s[k] for k in keys) for s in samples] == [
        ("x2", "qd1consis", 0, QUESTIONS[0], "1870s", "1870s", True),
        ("x2", "qd1consis", 1, QUESTIONS[1], "France", "Germany", False),
    ]
    assert [s["f1"] for s in samples] == [1.0, 0.0]
    assert callback.latest == {"qd1consis": 0.5}
