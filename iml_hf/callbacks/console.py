"""Console logging that stays readable when the mechanism measurements log dozens of keys.

Trackers (``report_to``) and ``metrics.jsonl`` get everything; the console shows each set's EM,
whole-model alignment and alias-referent embedding cosine, not every group, F1, loss and bound.
"""

from __future__ import annotations

from transformers import PrinterCallback, ProgressCallback, Trainer


def console_view(logs: dict[str, object]) -> dict[str, object]:
    """The log keys worth printing: everything except per-group alignment and interval bounds."""
    view = {}
    for key, value in logs.items():
        parts = key.split("/")
        if key.startswith(("grad_align/", "grad_align_mean/")) and (parts[-1] != "all"):
            continue
        if key.startswith("grad_align_mean/") or (key.startswith("embedding/") and parts[-1] != "embed_cos"):
            continue
        if key.startswith("eval/") and parts[-1] != "em":  # F1 and loss go to trackers and metrics.jsonl
            continue
        view[key] = value
    return view


#: Keys every log carries (where training is); a log with nothing else is not worth a line.
POSITION_KEYS = frozenset({"stage_index", "total_step", "epoch", "step"})


class CompactPrinterCallback(PrinterCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        view = console_view(logs or {})
        if set(view) - POSITION_KEYS:
            super().on_log(args, state, control, logs=view, **kwargs)


class CompactProgressCallback(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        view = console_view(logs or {})
        if set(view) - POSITION_KEYS:
            super().on_log(args, state, control, logs=view, **kwargs)


def use_compact_console(trainer: Trainer) -> None:
    """Swap the Trainer's printing callbacks for the compact ones."""
    for plain, compact in ((PrinterCallback, CompactPrinterCallback), (ProgressCallback, CompactProgressCallback)):
        if trainer.pop_callback(plain) is not None:
            trainer.add_callback(compact)
