"""The model card: metadata, EM table, contrasts with intervals computed independently here, corpus
identity, parameters, recipe, versions and loading code; and the card a real run writes."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from conftest import run_recipe
from huggingface_hub import ModelCard

from iml_hf.config import parse_recipe
from iml_hf.reporting.model_card import LIBRARIES, model_card, stage_card, stage_intervals
from iml_hf.reporting.stats import difference_interval, wilson_interval

Z = 1.959963984540054  # the 97.5% point of the standard normal


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, from its formula."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 - p2, from its formula."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    return p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (17, 40), (1, 1)])
def test_wilson_interval_is_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson(k, n), abs=1e-12)


@pytest.mark.parametrize(
    "counts, published",
    [  # Newcombe (1998), Statistics in Medicine 17, table II, method 10
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_difference_interval_matches_newcombe_1998(counts, published):
    assert difference_interval(*counts) == pytest.approx(newcombe(*counts), abs=1e-12)
    assert difference_interval(*counts) == pytest.approx(published, abs=5e-5)


def _results(tiny_recipe, *overrides: str) -> dict:
    """Results of a made-up two-stage run of the tiny recipe (no training needed to write a card)."""
    em = {
        "pretrain": {"pretrain": 0.5, "x1t": 0.25, "x1f": 0.25, "x2t": 0.125, "x2f": 0.0},
        "x2": {"pretrain": 0.75, "x1t": 0.5, "x1f": 0.125, "x2t": 0.625, "x2f": 0.125},
    }
    n = {"pretrain": 8, "x1t": 16, "x1f": 16, "x2t": 40, "x2f": 40}
    stages = {
        name: {
            "em": values,
            "n": n,
            "steps": 10,
            "train_examples": 64,
            "train_loss": 1.25,
            "wall_time_s": 2.0,
            "contrasts": {"iml_gap": values["x2t"] - values["x2f"], "x1_gap": values["x1t"] - values["x1f"]},
        }
        for name, values in em.items()
    }
    return {
        "final_em": em["x2"],
        "contrasts": stages["x2"]["contrasts"],
        "stages": stages,
        "contrast_sets": [["iml_gap", "x2t", "x2f"], ["x1_gap", "x1t", "x1f"]],
        "wall_time_s": 12.0,
        "corpus": {
            "cache_key": "modmul-0123456789abcdef",
            "fingerprint": "f" * 64,
            "rows": {"train": 122, "test": 102},
        },
        "parameters": {"total": 4832, "trainable": 4800},
        "recipe": parse_recipe([str(tiny_recipe), *overrides]).resolved,
    }


def test_card_states_metadata_results_corpus_recipe_and_loading(tiny_recipe):
    results = _results(tiny_recipe, "--corpus_dataset=me/iml-toy", "--corpus_revision=v1")
    text = str(model_card(results, "me/toy-seed0", ("3 x05 =", "7")))
    card = ModelCard(text)
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["iml_hf", "implicit-meta-learning", "modmul"]
    assert card.data.datasets == ["me/iml-toy"]

    assert "| `x2t` | 40 | 0.125 | 0.625 |" in text and "| `pretrain` | 8 | 0.500 | 0.750 |" in text
    low, high = newcombe(25, 40, 5, 40)  # x2t 0.625 of 40 against x2f 0.125 of 40
    assert "| `iml_gap` | `x2t` - `x2f` | +0.125 " in text
    assert f"+0.500 [{low:+.3f}, {high:+.3f}] |" in text
    low, high = newcombe(8, 16, 2, 16)
    assert f"+0.375 [{low:+.3f}, {high:+.3f}] |" in text
    assert "modmul-0123456789abcdef" in text and "f" * 64 in text and "`me/iml-toy` at v1" in text
    assert "4,832 parameters" in text

    recipe = yaml.safe_load(re.search(r"```yaml\n(.*?)\n```", text, re.S).group(1))
    assert recipe == json.loads(json.dumps(results["recipe"]))
    assert 'AutoModelForCausalLM.from_pretrained("me/toy-seed0")' in text
    assert 'pipeline("text-generation", model="me/toy-seed0")' in text and 'generator("3 x05 =",' in text
    for library in LIBRARIES:
        assert f"- {library} " in text


def test_card_without_a_hub_corpus_or_saved_model(tiny_recipe, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    results = _results(tiny_recipe, f"--corpus_dataset={folder}", "--save_model=false")
    text = str(model_card(results))
    assert ModelCard(text).data.datasets is None  # a local folder is no Hub dataset
    assert "## How to load" not in text
    results["recipe"]["model"]["model_name_or_path"] = "EleutherAI/pythia-14m"
    assert ModelCard(str(model_card(results))).data.base_model == "EleutherAI/pythia-14m"


def test_stage_intervals_are_wilson_per_set_and_newcombe_per_contrast(tiny_recipe):
    stage = _results(tiny_recipe)["stages"]["x2"]  # x2t 25 of 40, x2f 5 of 40
    contrasts = {"iml_gap": ("x2t", "x2f"), "x1_gap": ("x1t", "x1f"), "absent": ("x2t", "nowhere")}
    intervals = stage_intervals(stage, contrasts)
    assert set(intervals["em"]) == set(stage["em"]) and set(intervals["contrasts"]) == {"iml_gap", "x1_gap"}
    assert intervals["em"]["x2t"] == pytest.approx(list(wilson(25, 40)), abs=1e-9)
    assert intervals["contrasts"]["iml_gap"] == pytest.approx(list(newcombe(25, 40, 5, 40)), abs=1e-9)
    without_n = stage_intervals({**stage, "n": {}}, contrasts)  # an older stage entry: undefined, not an error
    assert set(without_n["em"].values()) == {None} and set(without_n["contrasts"].values()) == {None}
    json.dumps(intervals, allow_nan=False)  # strict JSON


def test_card_states_the_runs_provenance(tiny_recipe):
    results = _results(tiny_recipe)
    results["provenance"] = {
        "versions": {"python": "3.11.7", "torch": "9.9.9"},
        "git": {"commit": "a" * 40, "dirty": True},
        "date": "2026-01-02T03:04:05+00:00",
        "command": "python -m iml_hf.train toy.yaml",
        "invoked": "command line",
    }
    text = str(model_card(results))
    assert "- torch 9.9.9" in text and "- python 3.11.7" in text  # the run's versions, not the reader's
    assert f"`{'a' * 40}` (with uncommitted changes)" in text
    assert "2026-01-02T03:04:05+00:00" in text and "`python -m iml_hf.train toy.yaml`" in text


def test_stage_card_describes_one_stage(tiny_recipe):
    text = str(stage_card(_results(tiny_recipe), "pretrain", "me/toy-seed0"))
    assert 'from_pretrained("me/toy-seed0", revision="pretrain")' in text
    assert "| set | n | pretrain |" in text and "0.750" not in text  # only this stage's EM
    low, high = newcombe(5, 40, 0, 40)
    assert f"+0.125 [{low:+.3f}, {high:+.3f}]" in text


def test_a_run_writes_its_card_with_n_per_set(monkeypatch, tmp_path):
    results, _ = run_recipe(monkeypatch, tmp_path)
    out = tmp_path / "run"
    text = (out / "README.md").read_text()
    final = results["stages"]["x2"]
    n = final["n"]
    assert n == {"pretrain": 6, "x1t": 16, "x1f": 16, "x2t": 32, "x2f": 32}
    assert json.loads((out / "results.json").read_text())["stages"]["x2"]["n"] == n
    low, high = newcombe(round(final["em"]["x2t"] * 32), 32, round(final["em"]["x2f"] * 32), 32)
    assert f"{final['contrasts']['iml_gap']:+.3f} [{low:+.3f}, {high:+.3f}] |" in text
    assert results["corpus"]["fingerprint"] in text and results["corpus"]["cache_key"] in text
    assert f'from_pretrained("{out}")' in text
    assert not (out / "stages").exists()  # stage weights are saved only for Hub branches
    written = json.loads((out / "results.json").read_text())  # intervals at every stage end, final at the top
    for name, stage in written["stages"].items():
        for subset, bounds in stage["intervals"]["em"].items():
            assert bounds == pytest.approx(list(wilson(round(stage["em"][subset] * n[subset]), n[subset])), abs=1e-9)
        low, high = newcombe(round(stage["em"]["x2t"] * 32), 32, round(stage["em"]["x2f"] * 32), 32)
        assert stage["intervals"]["contrasts"]["iml_gap"] == pytest.approx([low, high], abs=1e-9), name
    assert written["intervals"] == written["stages"]["x2"]["intervals"]
