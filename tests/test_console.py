"""The console: banners, formatted log lines, plain lines when piped, quiet mode, the two
warnings gone at their cause, and training-loss rows in metrics.jsonl."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from iml_hf import train
from iml_hf.training.progress import ConsoleCallback
from iml_hf.utils import console
from iml_hf.utils.console import console_view, measurement_line, stage_banner, training_line


def test_console_view_keeps_headlines_only():
    logs = {
        "loss": 0.5,
        "eval/x2t/em": 0.4,
        "eval/x2t/f1": 0.5,
        "grad_align/x2t/all": 0.1,
        "grad_align/x2t/all_ci_low": 0.05,
        "grad_align/x2t/embeddings": 0.2,
        "grad_align_mean/x2t/all": 0.3,
        "embedding/x2t/embed_cos": 0.6,
        "embedding/x2t/embed_cos_other": 0.1,
        "total_step": 10.0,
    }
    assert console_view(logs) == {
        "loss": 0.5,
        "eval/x2t/em": 0.4,
        "grad_align/x2t/all": 0.1,
        "embedding/x2t/embed_cos": 0.6,
        "total_step": 10.0,
    }


def test_banner_names_the_stage_its_data_steps_and_measurements():
    text = stage_banner(
        1,
        3,
        "x1",
        ["x1t", "x1f"],
        {"pretrain": 0.5},
        4800,
        6000,
        ["exact match on 5 sets every 1000 steps and at the end", "layer analysis at the end"],
        500,
    )
    lines = text.splitlines()
    assert lines[0].startswith("== stage 2/3: x1 ")
    assert "x1t, x1f + replay pretrain 50%" in text and "(4,800 rows)" in text
    assert "6,000 (resuming at step 500)" in text
    assert "exact match on 5 sets every 1000 steps" in text and lines[-1].strip() == "layer analysis at the end"


def test_log_lines_are_numbers_with_the_stage_name():
    line = measurement_line(
        "x1",
        450,
        6000,
        "eval",
        [("pretrain", "em", 0.33751, {}), ("x1t", "em", 0.25, {}), ("x1t", "f1", 0.9, {}), ("x1t", "loss", 2.0, {})],
        1.234,
    )
    assert line == "[x1 step  450/6000] eval EM     pretrain 0.338  x1t 0.250  (1.2 s)"
    assert (
        measurement_line("x1", 6000, 6000, "grad_align", [("x2t", "all", 0.0123, {}), ("x2t", "mlp", 0.5, {})], 0.4)
        == "[x1 step 6000/6000] grad align  x2t +0.012  (0.4 s)"
    )
    assert measurement_line("x1", 1, 2, "grad_align", [("x2t", "mlp", 0.5, {})], 0.1) is None  # nothing headline
    line = training_line(
        "pretrain",
        100,
        300,
        {"loss": 1.72226, "grad_norm": 0.382, "learning_rate": 0.003, "stage_index": 0.0},
        rate=20.0,
    )
    assert (
        line == "[pretrain step 100/300] train       loss 1.722  grad_norm 0.382  lr 3.00e-03   20.0 steps/s, 10 s left"
    )
    assert "'" not in line and "stage_index" not in line


def _state(step: int = 0, max_steps: int = 10) -> TrainerState:
    state = TrainerState(is_local_process_zero=True, is_world_process_zero=True)
    state.global_step, state.max_steps = step, max_steps
    return state


def test_callback_prints_plain_lines_without_a_terminal(capsys):
    """Piped (capsys is not a TTY): no bar and no carriage return, a plain progress line once the
    interval has passed, a banner and formatted training lines."""
    args = TrainingArguments(output_dir="unused", report_to="none")
    callback = ConsoleCallback("x1", banner=lambda state: f"== stage x1 ({state.max_steps} steps)", plain_every_s=0.0)
    control = TrainerControl()
    callback.on_train_begin(args, _state(), control)
    assert callback.training_bar is None
    for step in range(1, 4):
        callback.on_step_end(args, _state(step), control)
    callback.on_log(args, _state(3), control, logs={"loss": 1.5, "grad_norm": 0.2, "learning_rate": 1e-3})
    callback.on_log(args, _state(3), control, logs={"eval/x1t/em": 0.5, "stage_index": 1.0})  # emit prints those
    callback.on_train_end(args, _state(3), control)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "== stage x1 (10 steps)"
    assert lines[1].startswith("[x1 step  1/10] progress") and "steps/s" in lines[1]
    assert lines[-1].startswith("[x1 step  3/10] train       loss 1.500  grad_norm 0.200  lr 1.00e-03")
    assert not any("eval" in line for line in lines)


def test_quiet_prints_nothing(capsys):
    args = TrainingArguments(output_dir="unused", report_to="none")
    console.set_verbosity(False)
    try:
        assert not console.is_verbose()
        callback = ConsoleCallback("x1", banner=lambda state: "banner", plain_every_s=0.0)
        callback.on_train_begin(args, _state(), TrainerControl())
        callback.on_step_end(args, _state(1), TrainerControl())
        callback.on_log(args, _state(1), TrainerControl(), logs={"loss": 1.0})
        console.say("hidden")
    finally:
        console.set_verbosity(True)
    assert capsys.readouterr().out == ""


def test_quiet_run_prints_only_the_final_table_and_writes_training_rows(monkeypatch, tiny_recipe, tmp_path, capsys):
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tiny_recipe), "--quiet"])
    results = train.main()
    captured = capsys.readouterr()
    assert captured.out.startswith("exact match at the end of each stage (n: examples per set)")
    assert "[pretrain step" not in captured.out and "== stage" not in captured.out and captured.err == ""
    assert console.is_verbose()  # --quiet holds for that call only
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["family"] == "train"]
    # logging_steps 5 and the stage's last step: pretrain 5, 6; x1 4; x2 4
    assert sorted({(r["stage"], r["stage_step"]) for r in train_rows}) == [
        ("pretrain", 5),
        ("pretrain", 6),
        ("x1", 4),
        ("x2", 4),
    ]
    assert {r["metric"] for r in train_rows} == {"loss", "grad_norm", "learning_rate"}
    assert all(
        r["name"] == f"train/{r['metric']}" and r["subset"] == "train" and isinstance(r["value"], float)
        for r in train_rows
    )
    last = next(r for r in train_rows if r["stage"] == "x2" and r["metric"] == "learning_rate")
    assert last["global_step"] == 14 and last["seed"] == 0
    assert results["stages"]["x2"]["train_loss"] > 0


def test_verbose_run_shows_banners_and_formatted_lines(monkeypatch, tiny_recipe, capsys):
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tiny_recipe), "--training.disable_tqdm=false"])
    train.main()
    captured = capsys.readouterr()
    out = captured.out
    assert "\r" not in out + captured.err  # not a terminal: no bar
    assert "== stage 2/3: x1 " in out and "x1t, x1f + replay pretrain 50%" in out
    assert "[pretrain step 5/6] train       loss " in out
    assert "[x1 step 3/4] eval EM     pretrain " in out
    assert "{'loss'" not in out and "stage_index" not in out
    assert out.index("corpus: modmul") < out.index("== stage 1/3: pretrain")


@pytest.fixture
def transformers_warnings():
    """Records what transformers' loggers warn (they do not propagate to the root logger)."""
    from transformers.utils import logging as hf_logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # a warning given once earlier in the session counts again
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield records
    hf_logging.set_verbosity(verbosity)
    root.removeHandler(handler)


def test_no_loss_type_warning(tiny_tokenizer, transformers_warnings):
    from iml_hf.config.args import ModelArguments
    from iml_hf.models.modeling import build_model

    for architecture in ("gpt2", "llama"):
        model = build_model(
            ModelArguments(architecture=architecture, num_layers=1, hidden_size=16, num_heads=2), tiny_tokenizer
        )
        ids = torch.tensor([[1, 2, 3, 4]])
        assert model(input_ids=ids, labels=ids).loss.isfinite()
        assert model.loss_type == "ForCausalLM"
    assert not [m for m in transformers_warnings if "loss_type" in m]
