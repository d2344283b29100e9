"""The layer-wise analysis (``iml_hf.analyze``) of the model at the end of every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerState
from transformers.utils import logging

from iml_hf.args import LayerAnalysisArguments
from iml_hf.callbacks.interval import IntervalCallback

logger = logging.get_logger(__name__)

if TYPE_CHECKING:
    from iml_hf.callbacks import MetricsLog
    from iml_hf.trainer import IMLTrainer


class LayerAnalysisCallback(IntervalCallback):
    """Writes ``layers/<index>-<stage>/layers.json`` (+ plots) at the end of the stage and logs the
    paper's quantities to the trackers and metrics.jsonl: the per-layer inner loss (Figure 2),
    Table 1's sequence- and pair-level shares with their chance level, and Table 2's share."""

    main_process_only = True

    def __init__(self, trainer: IMLTrainer, sequences: list[list[int]], metrics_log: MetricsLog,
                 output_dir: str | Path, args: LayerAnalysisArguments):
        super().__init__(trainer, metrics_log, interval=0)
        self.sequences = sequences
        self.folder = Path(output_dir) / "layers"
        self.args = args
        self.latest: dict[str, Any] = {}

    def measure(self, state: TrainerState) -> None:
        from iml_hf.analyze.report import analyze_model

        position = self.trainer.position(state)
        out = self.folder / f"{position['stage_index']}-{position['stage']}"
        try:
            summary = analyze_model(self.trainer.model, self.sequences, self.args, out, {"split": self.args.split})
        except ValueError as error:  # an analysis that cannot run must not cost the training run
            message = str(error).replace("--min_position", "layer_analysis.min_position").replace(
                "--max_final_loss", "layer_analysis.max_final_loss")
            logger.warning("layer analysis skipped at the end of stage %s: %s", position["stage"], message)
            self.latest = {"skipped": message}
            return
        split = self.args.split
        loss = summary["inner_loss"]
        entries = [(split, f"inner_loss/{name.replace(' ', '_')}", value, {})
                   for name, value in zip(loss["applied_to"], loss["mean"] or [])]
        table1 = summary["norm_statistics"]["table1"]
        for key in ("sequence_level", "pair_level", "chance_sequence_level"):
            if table1[key] is not None:
                entries.append((split, f"table1/{key}", table1[key], {}))
        table2 = summary.get("linear_model", {}).get("table2", {})
        if table2.get("proposition_1") is not None:
            entries.append((split, "table2/proposition_1", table2["proposition_1"], {}))
        self.emit(state, "layers", entries)
        self.latest = {k: summary[k] for k in ("inner_loss", "norm_statistics", "linear_model") if k in summary}
