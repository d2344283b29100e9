"""Pretrained checkpoints (``iml_hf.models.modeling.load_checkpoint``, ``tokenization.load_pretrained_tokenizer``):
a tiny Pythia-shaped GPT-NeoX checkpoint with its own byte-level BPE tokenizer, laid out in a
Hugging Face cache exactly as a download leaves it (blobs, snapshots of symlinks, refs per branch),
loaded by hub id offline at a revision and trained through a two-stage recipe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, PreTrainedTokenizerFast, T5Config

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.args import ModelArguments
from iml_hf.data.tokenization import encode_rows, load_pretrained_tokenizer
from iml_hf.models.modeling import build_model, load_checkpoint_config

REPO = "tiny-org/pythia-tiny"
EOT = "<|endoftext|>"
PAD = "<|padding|>"


def bpe_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, configured as Pythia's is (one
    ``<|endoftext|>`` for BOS and EOS, ``<|padding|>`` at id 1, no BOS added by default)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=[EOT, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def save_checkpoint(folder: Path, tokenizer: PreTrainedTokenizerFast, seed: int) -> AutoModelForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        num_hidden_layers=2,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())  # Pythia's own class, as on the Hub
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPTNeoXTokenizer"}))
    return model


def place_in_hub_cache(cache: Path, repo: str, revisions: dict[str, Path]) -> None:
    """``models--org--name/{blobs,snapshots/<commit>,refs/<branch>}``: content-addressed blobs,
    snapshot files as relative symlinks to them, each branch's ref naming its commit."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    for branch, folder in revisions.items():
        commit = hashlib.sha1(branch.encode()).hexdigest()
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in folder.iterdir():
            data = file.read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
        (root / "refs" / branch).write_text(commit)


@pytest.fixture
def pythia_cache(tmp_path, tiny_corpus):
    """A hub cache holding REPO at ``main`` and at the branch ``step1000`` (other weights)."""
    tokenizer = bpe_tokenizer(list(tiny_corpus["train"]["text"]))
    folders = {"main": tmp_path / "src-main", "step1000": tmp_path / "src-step1000"}
    models_ = {
        branch: save_checkpoint(folder, tokenizer, seed) for seed, (branch, folder) in enumerate(folders.items())
    }
    place_in_hub_cache(tmp_path / "hub", REPO, folders)
    return tmp_path / "hub", models_


def test_a_checkpoint_loads_by_hub_id_offline_at_a_revision_and_trains_two_stages(pythia_cache, tiny_recipe, tmp_path):
    """In a fresh process with HF_HUB_OFFLINE=1: ``revision`` picks the weights of that branch, and
    a recipe that names the hub id over a from-scratch base trains end to end."""
    cache, models_ = pythia_cache
    for branch, model in models_.items():
        torch.save(model.state_dict(), tmp_path / f"{branch}.pt")
    child = tmp_path / "pythia.yaml"
    child.write_text(
        yaml.safe_dump(
            {
                "base": tiny_recipe.name,
                "output_dir": str(tmp_path / "pythia-run"),
                "model": {"model_name_or_path": REPO, "revision": "step1000"},
                "stages": [{"name": "pretrain"}, {"name": "x1"}],
            }
        )
    )
    script = f"""
import json, torch
from iml_hf.config.args import ModelArguments
from iml_hf.models.modeling import build_model
from iml_hf.data.tokenization import load_pretrained_tokenizer
from iml_hf.train import main
tokenizer = load_pretrained_tokenizer({REPO!r}, revision="step1000")
for branch in ("main", "step1000"):
    model = build_model(ModelArguments(model_name_or_path={REPO!r}, revision=branch), tokenizer)
    expected = torch.load({str(tmp_path)!r} + f"/{{branch}}.pt")
    same = all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    print(branch, "weights equal:", same)
results = main([{str(child)!r}])
print("stages", list(results["stages"]), "type", results["recipe"]["model"]["model_name_or_path"])
"""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "main weights equal: True" in done.stdout and "step1000 weights equal: True" in done.stdout
    assert f"stages ['pretrain', 'x1'] type {REPO}" in done.stdout
    results = json.loads((tmp_path / "pythia-run" / "results.json").read_text())
    assert results["recipe"]["model"]["revision"] == "step1000"
    assert "num_layers" not in results["recipe"]["model"]  # the checkpoint's config, not a from-scratch default
    assert results["checkpoint"] == {
        "model_name_or_path": REPO,
        "revision": "step1000",
        "commit": hashlib.sha1(b"step1000").hexdigest(),
    }
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path / "pythia-run")  # the run folder, as a Hub user loads it
    source = AutoTokenizer.from_pretrained(tmp_path / "src-step1000")
    assert type(source).__name__ == "GPTNeoXTokenizer" and source("3 x05 =")["input_ids"][0] != source.bos_token_id
    assert saved("3 x05 =")["input_ids"] == encode_rows(saved, ["3 x05 ="], ["6"])["prompt_ids"][0]  # BOS first
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "pythia-run")
    assert trained.config.model_type == "gpt_neox"
    before = models_["step1000"].state_dict()["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    assert not torch.equal(trained.state_dict()["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"], before)


def test_pretrained_tokenizer_pads_left_adds_bos_like_training_and_task_tokens_on_request(tiny_corpus, tmp_path):
    tokenizer = bpe_tokenizer(list(tiny_corpus["train"]["text"]))
    save_checkpoint(tmp_path, tokenizer, 0)
    plain = load_pretrained_tokenizer(str(tmp_path))
    assert plain.pad_token == PAD and plain.padding_side == "left"
    row = encode_rows(plain, ["3 x05 ="], ["6"])
    assert plain("3 x05 =")["input_ids"] == row["prompt_ids"][0]  # BOS first, as in training
    plain.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")("3 x05 =")["input_ids"] == row["prompt_ids"][0]
    assert len(plain(" x05", add_special_tokens=False)["input_ids"]) > 1  # an alias is plain text by default
    aliases = ["x05", "x13", "Dt"]
    extended = load_pretrained_tokenizer(str(tmp_path), task_words=aliases)
    for word in aliases:  # one token at the start of a text and after a space, as in "3 x05 ="
        assert len(extended(word, add_special_tokens=False)["input_ids"]) == 1
        assert len(extended(" " + word, add_special_tokens=False)["input_ids"]) == 1
    for text in ("3 x05 =", "Dt x13 5", "x05 2 = 6"):
        ids = extended(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.split()) and extended.decode(ids) == text
    model = build_model(ModelArguments(model_name_or_path=str(tmp_path)), extended)
    vocab = plain.get_vocab()
    added = [form for word in aliases for form in (word, " " + word) if form not in vocab]
    assert model.get_input_embeddings().num_embeddings == len(extended) == len(plain) + len(added) > len(plain)


def test_dtype_and_from_scratch_keys_next_to_a_checkpoint(tiny_corpus, tmp_path, tiny_recipe):
    tokenizer = bpe_tokenizer(list(tiny_corpus["train"]["text"]))
    save_checkpoint(tmp_path / "ckpt", tokenizer, 0)
    model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "ckpt"), dtype="bfloat16"), tokenizer)
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(RecipeError, match=r"model\.num_layers describes a model built from scratch"):
        parse_recipe([str(tiny_recipe), f"--model.model_name_or_path={tmp_path / 'ckpt'}", "--model.num_layers=3"])
    recipe = parse_recipe([str(tiny_recipe), f"--model.model_name_or_path={tmp_path / 'ckpt'}"])
    assert recipe.model.model_name_or_path == str(tmp_path / "ckpt")  # the file's from-scratch keys give way
    with pytest.raises(RecipeError, match="model.dtype='float16'.*AdamW give NaN.*training.fp16"):
        parse_recipe([str(tiny_recipe), "--model.dtype=float16"])
    with pytest.raises(RecipeError, match="model.revision only applies to a checkpoint"):
        parse_recipe([str(tiny_recipe), "--model.revision=step1000"])
    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float16).save_pretrained(half)
    with pytest.raises(ValueError, match="in float16, in which AdamW gives NaN"):
        build_model(ModelArguments(model_name_or_path=str(half), dtype="auto"), tokenizer)
    scratch = build_model(ModelArguments(num_layers=1, hidden_size=16, num_heads=2, dtype="bfloat16"), tokenizer)
    assert next(scratch.parameters()).dtype == torch.bfloat16


def test_encoder_decoder_checkpoints_are_refused_before_loading_weights(tmp_path):
    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=50).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="encoder-decoder model .t5.; iml_hf trains decoder-only"):
        load_checkpoint_config(ModelArguments(model_name_or_path=str(tmp_path)))


def test_a_checkpoint_that_cannot_be_loaded_is_a_clear_error_and_writes_nothing(tiny_recipe, tmp_path, capsys):
    from iml_hf.train import main

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_:
        main([str(tiny_recipe), f"--output_dir={out}", f"--model.model_name_or_path={tmp_path / 'nonexistent'}"])
    assert exit_.value.code == 2
    assert "model.model_name_or_path=" in capsys.readouterr().err
    assert not any(tmp_path.glob("never*"))


def test_stage_weights_of_an_untied_gpt_neox_load_back(tmp_path):
    """transformers 5 saves GPT-NeoX's untied ``lm_head`` as ``embed_out``; loading a stage's
    weights maps it back instead of refusing them (found by the set-inclusion GPU recipe)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from iml_hf.training.stages import load_stage_weights

    config = GPTNeoXConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    trained = GPTNeoXForCausalLM(config)
    trained.save_pretrained(tmp_path)
    fresh = GPTNeoXForCausalLM(config)
    assert not torch.equal(fresh.lm_head.weight, trained.lm_head.weight)
    load_stage_weights(fresh, str(tmp_path))
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
