"""``analyze layers``: run the layer-wise analysis over a data source and write layers.json + plots."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from iml_hf.analyze.layers import LayerAccess, batches, norm_statistics, run_layers
from iml_hf.analyze.linearize import linearized_condition_shares
from iml_hf.analyze.sources import load_sequences
from iml_hf.gradients import full_precision
from iml_hf.io import write_json_atomic
from iml_hf.tokenization import load_pretrained_tokenizer


def layer_names(num_layers: int) -> list[str]:
    """Names of the representations: after the embeddings, after layer 1 .. L."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, num_layers + 1)]


def collect(model, sequences, args) -> dict[str, Any]:
    """For up to ``max_tokens`` tokens: positions, norms and inner losses; the losses of the
    tokens that pass the paper's filters (``min_position``, ``max_final_loss``); and a sample of
    whole trajectories (filtered tokens) for the PCA plot."""
    kept_losses, norms, positions, sample = [], [], [], []
    seen = 0
    for batch in batches(sequences, args.batch_size, model.config.pad_token_id or 0):
        stats = run_layers(model, batch, keep_trajectories=len(sample) < args.pca_tokens)
        keep = stats.positions >= args.min_position
        if args.max_final_loss is not None:
            keep &= stats.inner_loss[:, -1] <= args.max_final_loss
        room = args.max_tokens - seen  # the last batch is cut so that every count covers the same tokens
        keep[room:] = False
        kept_losses.append(stats.inner_loss[keep])
        norms.append(stats.norms[:room])
        positions.append(stats.positions[:room])
        if stats.trajectories is not None:
            sample.extend(stats.trajectories[keep][: args.pca_tokens - len(sample)])
        seen += len(stats.positions)
        if seen >= args.max_tokens:
            break
    filtered = torch.cat(kept_losses)
    if len(filtered) == 0:
        raise ValueError("no token passed the filters; lower --min_position or raise --max_final_loss")
    return {
        "losses": filtered,
        "norms": torch.cat(norms),
        "positions": torch.cat(positions),
        "trajectories": torch.stack(sample) if sample else None,
    }


def pca_3d(trajectories: torch.Tensor) -> np.ndarray:
    """Project every point of the trajectories (N, L, d) onto the top three principal components
    of all of them (numpy SVD of the centred points)."""
    points = trajectories.reshape(-1, trajectories.shape[-1]).numpy().astype(np.float64)
    centred = points - points.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:3].T
    if projected.shape[1] < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    return projected.reshape(trajectories.shape[0], trajectories.shape[1], 3)


def save_plots(out: Path, summary: dict[str, Any], projected: np.ndarray | None) -> list[str]:
    from iml_hf.plots import plt, save_figure

    written = []
    names = summary["representations"]
    loss = summary["inner_loss"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(loss["mean"]))
    axes[0].errorbar(x, loss["mean"], yerr=loss["std"], marker="o", capsize=3)
    axes[0].set_xticks(x, names[: len(x)], rotation=30, fontsize=8)
    axes[0].set_ylabel("approximate inner loss (CE)")
    axes[0].set_title("last layer + LM head applied to each representation", fontsize=9)
    norm = summary["norms"]
    x = np.arange(len(norm["mean"]))
    axes[1].errorbar(x, norm["mean"], yerr=norm["std"], marker="o", capsize=3, color="tab:green")
    axes[1].set_xticks(x, names, rotation=30, fontsize=8)
    axes[1].set_ylabel("L2 norm of the representation")
    stats = summary["norm_statistics"]["without_position_0"]
    if stats["sequence_level"] is not None:
        axes[1].set_title(f"never decreasing: {100 * stats['sequence_level']:.1f}% of trajectories, "
                          f"{100 * stats['pair_level']:.1f}% of layer pairs", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "inner_loss_and_norms.png")
    written.append("inner_loss_and_norms.png")
    if projected is not None and projected.shape[1] > 1:
        fig = plt.figure(figsize=(6, 5.5))
        ax = fig.add_subplot(projection="3d")
        colours = plt.cm.viridis(np.linspace(0, 1, projected.shape[1]))
        for trajectory in projected:
            ax.plot(*trajectory.T, color="0.6", lw=0.7)
            ax.scatter(*trajectory.T, c=colours, s=10)
        ax.set_title(f"PCA of {projected.shape[0]} token trajectories (dark: embeddings, yellow: after the last layer)", fontsize=9)
        fig.tight_layout()
        save_figure(fig, out / "pca_trajectories.png")
        written.append("pca_trajectories.png")
    return written


def analyze_model(model, sequences: list[list[int]], options: Any, out: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The analysis of an in-memory model on token sequences; writes layers.json and the plots
    into ``out``. ``options`` carries max_tokens, min_position, max_final_loss, batch_size,
    pca_tokens and linearize_tokens (the CLI's arguments or ``LayerAnalysisArguments``)."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    sequences = list(sequences)
    random.Random(options.seed).shuffle(sequences)  # a sample of the whole source, not its first rows
    try:
        access = LayerAccess.of(model)
        with full_precision(model):
            data = collect(model, sequences, options)
            linearized = linearized_condition_shares(model, sequences, options) if options.linearize_tokens else None
    finally:
        model.train(was_training)
    num_layers = len(access.layers)
    names = layer_names(num_layers)
    losses, norms = data["losses"], data["norms"]
    summary: dict[str, Any] = {
        **source,
        "architecture": type(model).__name__,
        "num_layers": num_layers,
        "representations": names,
        "tokens": int(norms.shape[0]),
        "inner_loss_tokens": int(losses.shape[0]),
        "filters": {"min_position": options.min_position, "max_final_loss": options.max_final_loss,
                    "max_tokens": options.max_tokens},
        "inner_loss": {
            "applied_to": names[:num_layers],
            "mean": losses.mean(0).tolist(),
            "std": losses.std(0).tolist() if losses.shape[0] > 1 else [0.0] * num_layers,
        },
        "norms": {"mean": norms.mean(0).tolist(),
                  "std": norms.std(0).tolist() if norms.shape[0] > 1 else [0.0] * (num_layers + 1)},
        "norm_statistics": norm_statistics(norms, data["positions"]),
    }
    if linearized is not None:
        summary["linearized_layers"] = linearized
    out.mkdir(parents=True, exist_ok=True)
    projected = pca_3d(data["trajectories"]) if data["trajectories"] is not None else None
    summary["plots"] = save_plots(out, summary, projected)
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json_atomic(out / "layers.json", summary)
    return summary


#: Window length for text files when --seq_len is not given (capped at the model's positions).
DEFAULT_SEQ_LEN = 128


def analyze_layers(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``analyze layers`` does; inputs are checked before anything is written."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if Path(args.model).is_dir() and not (Path(args.model) / "config.json").is_file():
        raise ValueError(f"--model {args.model!r} is a folder without config.json, so not a saved model; pass a "
                         "run folder of iml_hf.train (it holds the model and tokenizer), a model folder or a hub id")
    try:  # the model first: a folder that is no model is then blamed on the model, not on a tokenizer library
        model = AutoModelForCausalLM.from_pretrained(args.model).to(device).eval()
        tokenizer = load_pretrained_tokenizer(args.model)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a causal LM and tokenizer from --model {args.model!r}: {error}") from None
    LayerAccess.of(model)
    positions = getattr(model.config, "max_position_embeddings", None)
    seq_len = args.seq_len or min(DEFAULT_SEQ_LEN, positions or DEFAULT_SEQ_LEN)
    if positions and seq_len > positions:
        raise ValueError(f"--seq_len {seq_len} exceeds the {positions} positions of --model {args.model!r}; "
                         f"pass --seq_len {positions} or less")
    sequences = load_sequences(args.data, tokenizer, seq_len, args.split, args.text_column)
    if not sequences:
        raise ValueError(f"--data {args.data!r} gave no sequences of two or more tokens")
    longest = max(len(s) for s in sequences)
    if positions and longest > positions:
        raise ValueError(f"--data {args.data!r} has a sequence of {longest} tokens, longer than the {positions} "
                         f"positions of --model {args.model!r}; use data the model was made for")
    return analyze_model(model, sequences, args, Path(args.output_dir), {"model": args.model, "data": args.data})
