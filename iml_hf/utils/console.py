"""What a run shows on the console: a banner per stage, a progress bar (or plain lines), and log
lines of formatted numbers with stage names; one switch (``set_verbosity``) silences all of it.

On a terminal (stderr is a TTY) each training stage gets a tqdm bar named after the stage, with
its rate and time left (``iml_hf.training.progress``, a subclass of transformers' ``ProgressCallback``);
evaluation passes get a
short-lived bar. Piped into a file (a sweep's per-run log, ``> run.log``) there is no bar and no
carriage return: a plain progress line every ``PLAIN_EVERY_S`` seconds instead. Log lines go to
stdout either way: ``[x1 step  450/6000] eval EM  pretrain 0.338  x1t 0.251 ... (0.4 s)``.
Trackers and ``metrics.jsonl`` get every key; the console shows the headline ones (``console_view``).
Quiet (``set_verbosity(False)``, ``--quiet``) prints nothing while training; errors, the
toolkit's warnings that a measurement was skipped, and the caller's final table still appear.

All formatting happens at log events (every ``logging_steps`` or measurement), never per step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

_VERBOSE = [True]

#: Seconds between plain progress lines when the console is not a terminal.
PLAIN_EVERY_S = 30.0

#: Keys every log carries (where training is); not worth printing.
POSITION_KEYS = frozenset({"stage_index", "total_step", "epoch", "step"})

#: Console labels of the measurement families (metrics.jsonl's ``family``).
FAMILY_LABELS = {
    "eval": "eval EM",
    "grad_align": "grad align",
    "embedding": "embed cos",
    "layers": "layers",
    "probes": "probes",
}


def set_verbosity(verbose: bool) -> None:
    """Show (True, the default) or hide banners, bars and log lines, for scripts and the Python API."""
    _VERBOSE[0] = bool(verbose)


def is_verbose() -> bool:
    """Whether the console shows banners, bars and log lines."""
    return _VERBOSE[0]


def interactive() -> bool:
    """Bars only when verbose and stderr (where tqdm draws) is a terminal."""
    stream = sys.stderr
    return is_verbose() and hasattr(stream, "isatty") and stream.isatty()


def say(text: str) -> None:
    """Print a line when verbose (above any live bar, which tqdm redraws below it)."""
    if is_verbose():
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()


def progress(items: Iterable[Any], desc: str, total: int | None = None, show: bool = True) -> Iterable[Any]:
    """A bar over ``items`` on a terminal (gone when done; ``show=False`` on other processes); the
    items unchanged otherwise."""
    if not (show and interactive()):
        return items
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)


@contextmanager
def timed(label: str, show: bool = True) -> Iterator[dict[str, str]]:
    """One line ``label: <text> (1.2 s)`` once the block is done (the block may fill ``text``;
    ``show=False`` on the other processes of a launch)."""
    start = time.perf_counter()
    detail: dict[str, str] = {"text": ""}
    yield detail
    if show:
        say(f"{label}: {detail['text']}{' ' if detail['text'] else ''}({duration(time.perf_counter() - start)})")


@contextmanager
def library_output() -> Iterator[None]:
    """Inside a run: no datasets/transformers bars (the console times those steps itself) and,
    when quiet, library warnings off; everything as it was afterwards."""
    import datasets
    from transformers.utils import logging as transformers_logging

    bars = datasets.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()  # "Writing model shards" at every checkpoint
    if not is_verbose():
        transformers_logging.set_verbosity_error()
        datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        if bars:
            datasets.enable_progress_bars()
        transformers_logging.set_verbosity(verbosity[0])
        datasets.logging.set_verbosity(verbosity[1])


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3:05``, ``1:02:05``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def number(value: Any, signed: bool = False) -> str:
    """A value as the console prints it: 3 decimals in [-10, 10] (signed for differences), else 4 digits."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:+.2e}" if signed else f"{value:.2e}"
    if abs(value) < 10:
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def console_view(logs: dict[str, Any]) -> dict[str, Any]:
    """The log keys worth printing: everything except per-group alignment, interval bounds and
    the eval sets' F1 and loss (trackers and metrics.jsonl get those)."""
    view = {}
    for key, value in logs.items():
        parts = key.split("/")
        if key.startswith(("grad_align/", "grad_align_mean/")) and (parts[-1] != "all"):
            continue
        if key.startswith("grad_align_mean/") or (key.startswith("embedding/") and parts[-1] != "embed_cos"):
            continue
        if key.startswith("eval/") and parts[-1] != "em":
            continue
        view[key] = value
    return view


def where(stage: str, step: int, max_steps: int) -> str:
    """``[x1 step  450/6000]``, the step padded to the width of the stage's last step."""
    return f"[{stage} step {step:>{len(str(max_steps))}}/{max_steps}]"


def measurement_line(
    stage: str,
    step: int,
    max_steps: int,
    family: str,
    entries: list[tuple[str, str, float, dict[str, Any]]],
    seconds: float,
) -> str | None:
    """One measurement as a line of ``name value`` pairs (headline metrics only), or None if none is shown."""
    logs = {f"{family}/{subset}/{metric}": value for subset, metric, value, _ in entries}
    shown = console_view(logs)
    if not shown:
        return None
    signed = family in ("grad_align", "embedding")
    cells = []
    for key, value in shown.items():
        _, subset, metric = key.split("/", 2)
        label = subset if metric in ("em", "all", "embed_cos") else f"{subset} {metric}"
        cells.append(f"{label} {number(value, signed)}")
    return (
        f"{where(stage, step, max_steps)} {FAMILY_LABELS.get(family, family):<10}  "
        + "  ".join(cells)
        + f"  ({duration(seconds)})"
    )


def training_line(stage: str, step: int, max_steps: int, logs: dict[str, Any], rate: float | None) -> str:
    """Loss, gradient norm and learning rate, then the rate and time left: numbers, not strings."""
    cells = []
    for key, label in (("loss", "loss"), ("grad_norm", "grad_norm"), ("learning_rate", "lr")):
        if isinstance(logs.get(key), (int, float)):
            value = logs[key]
            cells.append(f"{label} {value:.2e}" if key == "learning_rate" else f"{label} {number(value)}")
    return f"{where(stage, step, max_steps)} {'train':<10}  " + "  ".join(cells) + "   " + pace(step, max_steps, rate)


def pace(step: int, max_steps: int, rate: float | None) -> str:
    """``70.6 steps/s, 1:18 left`` (or just the share done until a rate is known)."""
    if rate and step >= max_steps:
        return f"{rate:.1f} steps/s"
    if not rate:
        return f"{100 * step / max(max_steps, 1):.0f}%"
    return f"{rate:.1f} steps/s, {duration((max_steps - step) / rate)} left"


def stage_banner(
    index: int,
    count: int,
    name: str,
    subsets: list[str],
    replay: dict[str, float],
    rows: int,
    steps: int,
    measured: list[str],
    resumed_at: int = 0,
) -> str:
    """The lines shown when a stage starts: what it trains on, for how long, and what is measured."""
    title = f"stage {index + 1}/{count}: {name}"
    lines = [f"== {title} " + "=" * max(3, 70 - len(title))]
    replayed = ", ".join(f"{k} {v:.0%}" for k, v in replay.items())
    lines.append(
        f"  train on   {', '.join(subsets)}" + (f" + replay {replayed}" if replayed else "") + f"  ({rows:,} rows)"
    )
    lines.append(f"  steps      {steps:,}" + (f" (resuming at step {resumed_at:,})" if resumed_at else ""))
    for i, item in enumerate(measured):
        lines.append(f"  {'measure' if i == 0 else '':<10} {item}")
    return "\n".join(lines)
