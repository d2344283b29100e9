"""Figures: three formats at the asked resolution, colours fixed by role across tasks, the chance
line of set inclusion, and probes drawn only where they were measured."""

from __future__ import annotations

import struct

import pytest

from iml_hf.reporting import plots
from iml_hf.reporting.figure_style import ROLE_COLOURS, chance_levels, set_style, subset_roles
from iml_hf.tasks import get_task_class


def _png_size(path):
    header = path.read_bytes()[:24]
    return struct.unpack(">II", header[16:24])


def test_save_figure_writes_png_pdf_and_svg_at_the_asked_dpi(tmp_path):
    sizes = {}
    for dpi in (50, 120):
        fig, ax = plots.plt.subplots(figsize=(4, 2))
        ax.plot([0, 1], [0, 1])
        written = plots.save_figure(fig, tmp_path / f"fig{dpi}.png", dpi=dpi)
        assert written == tmp_path / f"fig{dpi}.png"
        assert (tmp_path / f"fig{dpi}.pdf").read_bytes().startswith(b"%PDF")
        assert b"<svg" in (tmp_path / f"fig{dpi}.svg").read_bytes()
        sizes[dpi] = _png_size(written)
    assert sizes == {50: (200, 100), 120: (480, 240)}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"fig{d}.{f}" for d in (50, 120) for f in ("png", "pdf", "svg")
    )


def test_a_role_has_one_colour_in_every_task():
    entities, toy, inclusion, digits = (get_task_class(n) for n in ("entities", "modmul", "set_inclusion", "digits_qa"))
    reliable = {
        set_style("d1consis", entities).colour,
        set_style("x2t", toy).colour,
        set_style("d1consis", inclusion).colour,
        set_style("qd1consis", digits).colour,
        set_style("x1t", toy).colour,
    }
    unreliable = {
        set_style("d2consis", entities).colour,
        set_style("x2f", toy).colour,
        set_style("qd2incons", inclusion).colour,
        set_style("d2consis", digits).colour,
    }
    baseline = {
        set_style("no_qd_baseline", entities).colour,
        set_style("q", inclusion).colour,
        set_style("no_qd_baseline", digits).colour,
    }
    base = {
        set_style("pretrain", toy).colour,
        set_style("knowledge", digits).colour,
        set_style("train_question_knowledge", entities).colour,
    }
    assert reliable == {ROLE_COLOURS["reliable"]} and unreliable == {ROLE_COLOURS["unreliable"]}
    assert baseline == {ROLE_COLOURS["no definition"]} and base == {ROLE_COLOURS["base task"]}
    assert subset_roles(entities)["d3consis"] == "third tag"
    # the IML stage's definition-only sets are solid, the sets whose questions were trained dashed
    assert set_style("x2t", toy).linestyle == "-" and set_style("x1t", toy).linestyle == "--"


def _captured(monkeypatch):
    """Keep the figure a plot function saves (save_figure would close it)."""
    kept = {}

    def keep(fig, path, dpi=plots.DEFAULT_DPI, formats=plots.FIGURE_FORMATS):
        kept["fig"] = fig
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    return kept


def test_set_inclusion_em_figure_draws_its_chance_line(monkeypatch, tmp_path):
    chance = chance_levels({"name": "set_inclusion"})
    assert [level for level, _ in chance] == [0.5]
    kept = _captured(monkeypatch)
    em = {
        "stage1": {"qd1consis": {10: [0.5, 0.52]}, "q": {10: [0.5, 0.5]}},
        "stage2": {"d1consis": {0: [0.5, 0.5], 10: [0.55, 0.6]}, "d2consis": {0: [0.5, 0.5], 10: [0.5, 0.52]}},
    }
    contrast = {"stage2": {0: [0.0, 0.0], 10: [0.05, 0.08]}}
    plots.stage_figure(
        em,
        tmp_path / "em.png",
        "t",
        task=get_task_class("set_inclusion"),
        contrast=contrast,
        contrast_label="EM(d1consis) - EM(d2consis)",
        chance=chance,
    )
    fig = kept["fig"]
    em_axes, contrast_axes = fig.axes[:2], fig.axes[2:]
    for ax in em_axes:  # every stage panel has the horizontal line at 0.5
        assert any(
            list(line.get_ydata()) == [0.5, 0.5] and line.get_label().startswith("chance 0.5")
            for line in ax.get_lines()
        )
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)  # one legend, outside the panels
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "d1consis (reliable tag)" in labels and "d2consis (unreliable tag)" in labels
    assert contrast_axes[1].get_ylabel() == "" and contrast_axes[0].get_ylabel() == "EM(d1consis) - EM(d2consis)"


def test_probe_figure_draws_no_line_across_stages_and_shows_controls(monkeypatch, tmp_path):
    kept = _captured(monkeypatch)
    per_stage = {
        "knowledge": {"accuracy": [0.5, 0.52], "shuffled": [0.49, 0.5], "chance": [0.5, 0.5]},
        "stage2": {"accuracy": [0.9, 0.95], "shuffled": [0.5, 0.48], "chance": [0.5, 0.5]},
    }
    plots.probe_figure(
        {"tag": {"embeddings": per_stage, "layer 1": per_stage}},
        ["knowledge", "stage1", "stage2"],
        tmp_path / "probes.png",
        "t",
    )
    ax = kept["fig"].axes[0]
    for line in ax.get_lines():
        ys = list(line.get_ydata())
        connected = line.get_linestyle() not in ("None", "", " ") and len(ys) > 1
        assert not connected or len(set(ys)) == 1, "a line joins probe values of different stages"
    assert ax.get_title() == "target: tag" and [t.get_text() for t in ax.get_xticklabels()][1] == "end of\nstage1"
    labels = [t.get_text() for t in kept["fig"].legends[0].get_texts()]
    assert {"embeddings", "layer 1", "embeddings, shuffled labels", "chance 0.5"} <= set(labels)
    assert plots.representation_name("layer_0") == "embeddings" and plots.representation_name("layer_2") == "layer 2"


def test_chance_levels_of_a_task_without_one_are_empty():
    assert chance_levels({"name": "modmul"}) == []
    assert chance_levels({"name": "entities", "values_per_relation": 20}) == [
        (pytest.approx(0.05), "uniform guess 1/20 (answers per relation)")
    ]
