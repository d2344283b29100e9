"""The layer-wise analysis (``iml_hf.analyze``) of the model at the end of every stage."""

from __future__ import annotations

from typing import Any

from transformers import TrainerState
from transformers.utils import logging

from iml_hf.config.measurement_args import LayerAnalysisArguments
from iml_hf.measure.callbacks.interval import StageEndCallback

logger = logging.get_logger(__name__)


class LayerAnalysisCallback(StageEndCallback):
    """Writes ``layers/<index>-<stage>/layers.json`` (+ plots) at the end of the stage and logs the
    paper's quantities to the trackers and metrics.jsonl: the per-layer inner loss (Figure 2),
    Table 1's sequence- and pair-level shares with their chance level, and Table 2's share."""

    folder_name = "layers"
    label = "layer analysis"
    args: LayerAnalysisArguments
    inputs: list[list[int]]  # the token ids of the analysed sequences

    def measure(self, state: TrainerState) -> None:
        from iml_hf.analysis.layer_report import analyze_model

        position, out = self.stage_folder(state)
        try:
            summary = analyze_model(self.trainer.model, self.inputs, self.args, out, {"split": self.args.split})
        except ValueError as error:  # an analysis that cannot run must not cost the training run
            message = (
                str(error)
                .replace("--min_position", "layer_analysis.min_position")
                .replace("--max_final_loss", "layer_analysis.max_final_loss")
            )
            logger.warning("layer analysis skipped at the end of stage %s: %s", position["stage"], message)
            self.latest = {"skipped": message}
            return
        split = self.args.split
        loss = summary["inner_loss"]
        entries: list[tuple[str, str, float, dict[str, Any]]] = [
            (split, f"inner_loss/{name.replace(' ', '_')}", value, {})
            for name, value in zip(loss["applied_to"], loss["mean"] or [])
        ]
        table1 = summary["norm_statistics"]["table1"]
        for key in ("sequence_level", "pair_level", "chance_sequence_level"):
            if table1[key] is not None:
                entries.append((split, f"table1/{key}", table1[key], {}))
        table2 = summary.get("linear_model", {}).get("table2", {})
        if table2.get("proposition_1") is not None:
            entries.append((split, "table2/proposition_1", table2["proposition_1"], {}))
        self.emit(state, "layers", entries)
        self.latest = {k: summary[k] for k in ("inner_loss", "norm_statistics", "linear_model") if k in summary}
