"""Console scripts (``iml-train``, ``iml-sweep``, ...): each wraps a ``python -m iml_hf.<module>``
entry point and returns its exit code as an int, since setuptools calls ``sys.exit(main())`` and
``iml_hf.train.main`` returns the results dict (which must not become the exit status)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: Console script -> (module whose ``main`` it runs, one line saying what it does).
COMMANDS: dict[str, tuple[str, str]] = {
    "iml-train": ("iml_hf.train", "run a recipe: corpus, stages, measurements, results.json"),
    "iml-sweep": ("iml_hf.sweep", "run a recipe over seeds and --set values, locally or on SLURM"),
    "iml-report": ("iml_hf.report", "aggregate a folder of runs into summary.json, tables, figures and report.md"),
    "iml-analyze": ("iml_hf.analyze", "layer-wise analysis and linear probes of a trained model"),
    "iml-push-corpus": ("iml_hf.push_corpus", "build a recipe's corpus and push it to a Hub dataset repo"),
    "iml-text-lm": ("iml_hf.text_lm", "train a small GPT-2 on the Python docs (for the layer analysis)"),
}


def exit_code(main: Callable[..., object], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``: an int it returns is the exit code, anything else (a results dict) is 0;
    a SystemExit's code is returned instead of raised."""
    try:
        result = main(argv)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def command(script: str, argv: list[str] | None = None) -> int:
    """Run console script ``script`` (a key of COMMANDS) with ``argv`` (default: sys.argv[1:])."""
    module = importlib.import_module(COMMANDS[script][0])
    return exit_code(module.main, sys.argv[1:] if argv is None else argv)


def train() -> int:
    """``iml-train``: ``python -m iml_hf.train``."""
    return command("iml-train")


def sweep() -> int:
    """``iml-sweep``: ``python -m iml_hf.sweep``."""
    return command("iml-sweep")


def report() -> int:
    """``iml-report``: ``python -m iml_hf.report``."""
    return command("iml-report")


def analyze() -> int:
    """``iml-analyze``: ``python -m iml_hf.analyze``."""
    return command("iml-analyze")


def push_corpus() -> int:
    """``iml-push-corpus``: ``python -m iml_hf.push_corpus``."""
    return command("iml-push-corpus")


def text_lm() -> int:
    """``iml-text-lm``: ``python -m iml_hf.text_lm``."""
    return command("iml-text-lm")
