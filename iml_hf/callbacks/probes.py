"""Linear probes (``iml_hf.analyze.probes``) of the model at the end of every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerState
from transformers.utils import logging

from iml_hf.args import ProbeArguments
from iml_hf.callbacks.interval import IntervalCallback

logger = logging.get_logger(__name__)

if TYPE_CHECKING:
    from iml_hf.analyze.probe_report import ProbeInputs
    from iml_hf.callbacks import MetricsLog
    from iml_hf.trainer import IMLTrainer


class ProbeCallback(IntervalCallback):
    """Writes ``probes/<index>-<stage>/probes.json`` (+ a plot per target) at the end of the stage
    and logs each target's held-out accuracy per representation as ``probes/<target>/layer_<i>``
    (``layer_0``: the embeddings' output), with its interval over folds, the chance line and the
    shuffled-label control as extras. A probe that cannot run is a warning and ``{"skipped": why}``."""

    main_process_only = True

    def __init__(self, trainer: IMLTrainer, probes: ProbeInputs, metrics_log: MetricsLog,
                 output_dir: str | Path, args: ProbeArguments):
        super().__init__(trainer, metrics_log, interval=0)
        self.probes = probes
        self.folder = Path(output_dir) / "probes"
        self.args = args
        self.latest: dict[str, Any] = {}

    def measure(self, state: TrainerState) -> None:
        from iml_hf.analyze.probe_report import run_probes

        position = self.trainer.position(state)
        out = self.folder / f"{position['stage_index']}-{position['stage']}"
        try:
            summary = run_probes(self.trainer.model, self.probes, self.args, out, {"stage": position["stage"]})
        except ValueError as error:  # a probe that cannot run must not cost the training run
            logger.warning("probes skipped at the end of stage %s: %s", position["stage"], error)
            self.latest = {"skipped": str(error)}
            return
        entries = []
        latest: dict[str, Any] = {}
        for target, result in summary["targets"].items():
            if "skipped" in result:
                logger.warning("probe %s skipped at the end of stage %s: %s", target, position["stage"],
                               result["skipped"])
                latest[target] = {"skipped": result["skipped"]}
                continue
            accuracy, shuffled = result["accuracy"], result["shuffled"]
            for i, value in enumerate(accuracy["mean"]):
                entries.append((target, f"layer_{i}", value, {
                    "ci_low": accuracy["ci_low"][i], "ci_high": accuracy["ci_high"][i], "chance": result["chance"],
                    "shuffled": shuffled["mean"][i]}))
            latest[target] = {"accuracy": accuracy["mean"], "ci_low": accuracy["ci_low"],
                              "ci_high": accuracy["ci_high"], "chance": result["chance"],
                              "shuffled": shuffled["mean"], "n": result["n"], "folds": result["folds"]}
        self.emit(state, "probes", entries)
        self.latest = {"representations": summary["representations"], "targets": latest}
