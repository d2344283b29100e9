"""Linear probes (``iml_hf.analysis.probes``) of the model at the end of every stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import TrainerState
from transformers.utils import logging

from iml_hf.config.measurement_args import ProbeArguments
from iml_hf.measure.callbacks.interval import StageEndCallback

logger = logging.get_logger(__name__)

if TYPE_CHECKING:
    from iml_hf.analysis.probe_report import ProbeInputs


class ProbeCallback(StageEndCallback):
    """Writes ``probes/<index>-<stage>/probes.json`` (+ a plot per target) at the end of the stage
    and logs each target's held-out accuracy per representation as ``probes/<target>/layer_<i>``
    (``layer_0``: the embeddings' output), with its interval over folds, the chance line and the
    shuffled-label control as extras. A probe that cannot run is a warning and ``{"skipped": why}``."""

    folder_name = "probes"
    label = "linear probes"
    args: ProbeArguments
    inputs: ProbeInputs  # the probe set and the variables' token ids

    def measure(self, state: TrainerState) -> None:
        from iml_hf.analysis.probe_report import run_probes

        position, out = self.stage_folder(state)
        try:
            summary = run_probes(self.trainer.model, self.inputs, self.args, out, {"stage": position["stage"]})
        except ValueError as error:  # a probe that cannot run must not cost the training run
            logger.warning("probes skipped at the end of stage %s: %s", position["stage"], error)
            self.latest = {"skipped": str(error)}
            return
        entries = []
        latest: dict[str, Any] = {}
        for target, result in summary["targets"].items():
            if "skipped" in result:
                logger.warning(
                    "probe %s skipped at the end of stage %s: %s", target, position["stage"], result["skipped"]
                )
                latest[target] = {"skipped": result["skipped"]}
                continue
            accuracy, shuffled = result["accuracy"], result["shuffled"]
            for i, value in enumerate(accuracy["mean"]):
                entries.append(
                    (
                        target,
                        f"layer_{i}",
                        value,
                        {
                            "ci_low": accuracy["ci_low"][i],
                            "ci_high": accuracy["ci_high"][i],
                            "chance": result["chance"],
                            "shuffled": shuffled["mean"][i],
                        },
                    )
                )
            latest[target] = {
                "accuracy": accuracy["mean"],
                "ci_low": accuracy["ci_low"],
                "ci_high": accuracy["ci_high"],
                "chance": result["chance"],
                "shuffled": shuffled["mean"],
                "n": result["n"],
                "folds": result["folds"],
            }
        self.emit(state, "probes", entries)
        self.latest = {"representations": summary["representations"], "targets": latest}
