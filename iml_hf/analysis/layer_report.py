"""``analyze layers``: run the layer-wise analysis over a data source and write layers.json + plots."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from iml_hf.analysis.layers import LayerAccess, batches, layer_inputs, norm_statistics, run_layers, sample_tokens
from iml_hf.analysis.linear_model import LinearModelTable
from iml_hf.analysis.sources import PAPER_CORPORA, load_sequences
from iml_hf.data.tokenization import load_pretrained_tokenizer
from iml_hf.measure.gradients import full_precision
from iml_hf.utils.io import write_json_atomic


def layer_names(num_layers: int) -> list[str]:
    """Names of the representations: after the embeddings, after layer 1 .. L."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, num_layers + 1)]


def collect(model, sequences: list[list[int]], options: Any) -> dict[str, Any]:
    """For up to ``max_tokens`` scored tokens: positions, norms and inner losses, and the losses of
    the tokens that pass Figure 2's filters (``min_position``, ``max_final_loss``)."""
    kept_losses, norms, positions = [], [], []
    seen = used = 0
    for batch in batches(sequences, options.batch_size, model.config.pad_token_id or 0):
        stats = run_layers(model, batch)
        keep = stats.positions >= options.min_position
        if options.max_final_loss is not None:
            keep &= stats.inner_loss[:, -1] <= options.max_final_loss
        room = options.max_tokens - seen  # the last batch is cut so that every count covers the same tokens
        keep[room:] = False
        kept_losses.append(stats.inner_loss[keep])
        norms.append(stats.norms[:room])
        positions.append(stats.positions[:room])
        seen += len(stats.positions)
        used += len(batch.lengths)
        if seen >= options.max_tokens:
            break
    return {
        "losses": torch.cat(kept_losses),
        "norms": torch.cat(norms),
        "positions": torch.cat(positions),
        "sequences_used": used,
    }


def paper_pca_samples(model) -> int:
    """Figure 3's sample count: 50 for GPT-2, 150 for the LLaMa models (Section 5.3)."""
    return 50 if type(LayerAccess.of(model).layers[0]).__name__ == "GPT2Block" else 150


def sampled_tokens(model, sequences: list[list[int]], options: Any, pca_samples: int) -> dict[str, Any]:
    """Figure 3's trajectories and Table 2's linear model on one uniform random sample of the
    analysed tokens (positions >= ``min_position``): the first ``pca_samples`` of it are drawn,
    the first ``linear_model_tokens`` tested. One forward pass per sampled sequence, so only one
    sequence's hidden states are held at a time."""
    count = max(pca_samples, options.linear_model_tokens)
    picks = sample_tokens([len(s) for s in sequences], options.min_position, count, options.seed)
    pca_picks, linear_picks = set(picks[:pca_samples]), set(picks[: options.linear_model_tokens])
    table = LinearModelTable(LayerAccess.of(model).layers) if options.linear_model_tokens else None
    if table is None or table.skipped:
        linear_picks = set()
    trajectories: dict[tuple[int, int], torch.Tensor] = {}
    started, linear_time = time.perf_counter(), 0.0
    for index in sorted({i for i, _ in pca_picks | linear_picks}):
        states = layer_inputs(model, sequences[index])
        for i, t in pca_picks:
            if i == index:  # the trajectory leaves the last layer out (Section 5.3)
                trajectories[(i, t)] = torch.stack([h[t].float().cpu() for h in states])
        positions = sorted(t for i, t in linear_picks if i == index)
        if positions and table is not None:  # linear_picks is empty without a table
            tic = time.perf_counter()
            table.add(states, positions)
            linear_time += time.perf_counter() - tic
    order = [trajectories[p] for p in picks[:pca_samples] if p in trajectories]
    return {
        "trajectories": torch.stack(order) if order else None,
        "linear_model": table.result() if table is not None else None,
        "linear_model_s": linear_time,
        "sampling_s": time.perf_counter() - started - linear_time,
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
    """Figure 2 (inner loss per layer, log scale as in the paper) beside the norms with Table 1's
    shares, and Figure 3 (3-D PCA of the sampled trajectories)."""
    from iml_hf.reporting.plots import RUN_DPI, RUN_FORMATS, plt, save_figure  # drawn in runs too: PNG only

    written = []
    names = summary["representations"]
    loss = summary["inner_loss"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if loss["tokens"]:
        x = np.arange(len(loss["mean"]))
        axes[0].errorbar(x, loss["mean"], yerr=loss["std"], marker="o", capsize=3)
        axes[0].set_xticks(x, names[: len(x)], rotation=30, fontsize=8)
        axes[0].set_yscale("log")
    axes[0].set_ylabel("approximate inner loss (CE, eq. 14)")
    axes[0].set_title(
        f"Figure 2: {loss['tokens']} tokens (position >= {summary['filters']['min_position']}, "
        f"final loss <= {summary['filters']['max_final_loss']})",
        fontsize=9,
    )
    norm = summary["norms"]
    x = np.arange(len(norm["mean"]))
    axes[1].errorbar(x, norm["mean"], yerr=norm["std"], marker="o", capsize=3, color="tab:green")
    axes[1].set_xticks(x, names, rotation=30, fontsize=8)
    axes[1].set_ylabel("L2 norm of the representation")
    table = summary["norm_statistics"]["table1"]
    if table["sequence_level"] is not None:
        axes[1].set_title(
            f"Table 1: non-decreasing {100 * table['sequence_level']:.1f}% of trajectories "
            f"(chance 2^-{table['pairs_per_trajectory']}), {100 * table['pair_level']:.1f}% of pairs",
            fontsize=9,
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "inner_loss_and_norms.png", RUN_DPI, RUN_FORMATS)
    written.append("inner_loss_and_norms.png")
    if projected is not None and projected.shape[1] > 1:
        fig = plt.figure(figsize=(6, 5.5))
        ax = fig.add_subplot(projection="3d")
        colours = plt.cm.viridis(np.linspace(0, 1, projected.shape[1]))
        for trajectory in projected:
            ax.plot(*trajectory.T, color="0.6", lw=0.7)
            ax.scatter(*trajectory.T, c=colours, s=10)
        ax.set_title(
            f"Figure 3: PCA of {projected.shape[0]} token trajectories, embeddings (dark) to "
            f"{summary['representations'][projected.shape[1] - 1]} (yellow)",
            fontsize=9,
        )
        fig.tight_layout()
        save_figure(fig, out / "pca_trajectories.png", RUN_DPI, RUN_FORMATS)
        written.append("pca_trajectories.png")
    return written


def analyze_model(model, sequences: list[list[int]], options: Any, out: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The analysis of an in-memory model on token sequences; writes layers.json and the plots
    into ``out``. ``options`` carries max_tokens, min_position, max_final_loss, batch_size,
    pca_samples, linear_model_tokens and seed (the CLI's arguments or ``LayerAnalysisArguments``)."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    sequences = list(sequences)
    random.Random(options.seed).shuffle(sequences)  # a sample of the whole source, not its first rows
    pca_samples = options.pca_samples if options.pca_samples is not None else paper_pca_samples(model)
    try:
        access = LayerAccess.of(model)
        with full_precision(model):
            data = collect(model, sequences, options)
            tic = time.perf_counter()
            sampled = sampled_tokens(model, sequences[: data["sequences_used"]], options, pca_samples)
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
        "filters": {
            "min_position": options.min_position,
            "max_final_loss": options.max_final_loss,
            "max_tokens": options.max_tokens,
        },
        "inner_loss": {
            "applied_to": names[:num_layers],
            "tokens": int(losses.shape[0]),
            "mean": losses.mean(0).tolist() if len(losses) else None,
            "std": (losses.std(0) if len(losses) > 1 else torch.zeros(num_layers)).tolist() if len(losses) else None,
        },
        "norms": {
            "mean": norms.mean(0).tolist(),
            "std": norms.std(0).tolist() if norms.shape[0] > 1 else [0.0] * (num_layers + 1),
        },
        "norm_statistics": norm_statistics(norms, data["positions"], options.min_position),
    }
    if sampled["linear_model"] is not None:
        summary["linear_model"] = sampled["linear_model"]
    trajectories = sampled["trajectories"]
    summary["pca"] = {"samples": 0 if trajectories is None else len(trajectories), "requested": pca_samples}
    out.mkdir(parents=True, exist_ok=True)
    summary["plots"] = save_plots(out, summary, pca_3d(trajectories) if trajectories is not None else None)
    summary["timings_s"] = {
        "layers": round(tic - started, 3),
        "linear_model": round(sampled["linear_model_s"], 3),
        "pca_and_sampling": round(sampled["sampling_s"], 3),
    }
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json_atomic(out / "layers.json", summary)
    return summary


#: Window length for text files when --seq_len is not given (capped at the model's positions).
DEFAULT_SEQ_LEN = 128


def load_model(args: argparse.Namespace | SimpleNamespace):
    """The checkpoint by path or hub id, in ``args.dtype``, on ``args.device`` or spread by
    ``args.device_map``; ValueError naming ``--model`` when it is not a causal LM with a tokenizer."""
    if Path(args.model).is_dir() and not (Path(args.model) / "config.json").is_file():
        raise ValueError(
            f"--model {args.model!r} is a folder without config.json, so not a saved model; pass a "
            "run folder of iml_hf.train (it holds the model and tokenizer), a model folder or a hub id"
        )
    if args.device_map and args.device:
        raise ValueError("pass --device or --device_map, not both (--device_map places the model itself)")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    try:  # the model first: a folder that is no model is then blamed on the model, not on a tokenizer library
        model = AutoModelForCausalLM.from_pretrained(
            args.model, revision=args.revision, dtype=dtype, device_map=args.device_map
        )
        if not args.device_map:
            device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            model = model.to(device)  # type: ignore[arg-type]  # @wraps(nn.Module.to) types it to(self)
        tokenizer = load_pretrained_tokenizer(args.model, revision=args.revision)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a causal LM and tokenizer from --model {args.model!r}: {error}") from None
    return model.eval(), tokenizer


def analyze_layers(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``analyze layers`` does; inputs are checked before anything is written."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    if args.data is None and args.corpus is None:
        raise ValueError("pass --data (a corpus folder, dataset, text file or hub id) or --corpus wikitext-103|1bw")
    data = args.data or PAPER_CORPORA[args.corpus].hub_id
    model, tokenizer = load_model(args)
    LayerAccess.of(model)
    positions = getattr(model.config, "max_position_embeddings", None)
    default = (positions or 1024) if args.corpus else min(DEFAULT_SEQ_LEN, positions or DEFAULT_SEQ_LEN)
    seq_len = args.seq_len or default  # the paper's corpora: whole rows, up to the model's context
    if positions and seq_len > positions:
        raise ValueError(
            f"--seq_len {seq_len} exceeds the {positions} positions of --model {args.model!r}; "
            f"pass --seq_len {positions} or less"
        )
    sequences = load_sequences(
        data,
        tokenizer,
        seq_len,
        args.split,
        args.text_column,
        corpus=args.corpus,
        min_words=args.min_words,
        max_samples=args.max_samples,
        seed=args.seed,
    )
    if not sequences:
        raise ValueError(f"--data {data!r} gave no sequences of two or more tokens")
    longest = max(len(s) for s in sequences)
    if positions and longest > positions:
        raise ValueError(
            f"--data {data!r} has a sequence of {longest} tokens, longer than the {positions} "
            f"positions of --model {args.model!r}; use data the model was made for"
        )
    source = {
        "model": args.model,
        "data": data,
        "corpus": args.corpus,
        "dtype": args.dtype,
        "sequences": len(sequences),
    }
    return analyze_model(model, sequences, args, Path(args.output_dir), source)
