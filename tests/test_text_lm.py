"""The small text LM: trains from the Python docs, saves a model the analysis can load."""

from __future__ import annotations

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from iml_hf import text_lm


def test_python_docs_split_is_disjoint_and_deterministic():
    from pydoc_data.topics import topics

    train, heldout = text_lm.python_docs_text()
    assert len(train) > 100_000 and len(heldout) > 10_000
    texts = list(dict.fromkeys(topics[n] for n in sorted(topics)))
    held, kept = texts[::10], [t for i, t in enumerate(texts) if i % 10]
    assert len(texts) < len(topics)  # several topic names share a text: split texts, not names
    assert heldout == "\n\n".join(held) and train == "\n\n".join(kept)
    assert set(held).isdisjoint(kept)  # no held-out topic is also a training topic
    assert text_lm.python_docs_text() == (train, heldout)


def test_tiny_training_run_saves_a_loadable_model(tmp_path):
    out = tmp_path / "lm"
    results = text_lm.main(
        [
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--num_layers",
            "2",
            "--hidden_size",
            "16",
            "--num_heads",
            "2",
            "--seq_len",
            "32",
            "--vocab_size",
            "300",
            "--batch_size",
            "4",
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["heldout_loss"] == results["heldout_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.n_layer == 2 and len(tokenizer) == 300
    assert (out / "heldout.txt").read_text().startswith(text_lm.python_docs_text()[1][:50])
    assert not (out / "checkpoints").exists()
