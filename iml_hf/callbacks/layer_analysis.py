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
    per-layer inner loss and the norm shares (``layers/...``) to the trackers and metrics.jsonl."""

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
        entries = [(self.args.split, f"inner_loss/{name.replace(' ', '_')}", value, {})
                   for name, value in zip(summary["inner_loss"]["applied_to"], summary["inner_loss"]["mean"])]
        shares = summary["norm_statistics"]
        for prefix, stats in (("", shares["without_position_0"]), ("with_embeddings_", shares["with_embeddings"]["without_position_0"])):
            for level in ("sequence_level", "pair_level"):
                if stats[level] is not None:
                    entries.append((self.args.split, f"norm_nondecreasing_{prefix}{level}", stats[level], {}))
        self.emit(state, "layers", entries)
        self.latest = {k: summary[k] for k in ("inner_loss", "norm_statistics", "linearized_layers") if k in summary}
