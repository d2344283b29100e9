"""The compact console view keeps the headline keys and drops per-group and interval detail."""

from iml_hf.callbacks.console import console_view


def test_console_view_keeps_headlines_only():
    logs = {
        "loss": 0.5,
        "eval/x2t/em": 0.4,
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


def test_a_log_with_only_hidden_keys_prints_no_line(capsys):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from iml_hf.callbacks.console import CompactPrinterCallback

    printer, args = CompactPrinterCallback(), TrainingArguments(output_dir="unused", report_to="none")
    state = TrainerState(is_local_process_zero=True)
    printer.on_log(args, state, TrainerControl(), logs={"grad_align_mean/x2t/all": 0.3, "stage_index": 1.0,
                                                        "total_step": 5.0, "epoch": 1.0})
    assert capsys.readouterr().out == ""
    printer.on_log(args, state, TrainerControl(), logs={"eval/x2t/em": 0.4, "total_step": 5.0})
    assert "eval/x2t/em" in capsys.readouterr().out
