"""Corpus caching keyed by a hash of the task arguments."""

from __future__ import annotations

from iml_hf.corpus import corpus_fingerprint, corpus_key, load_or_build_corpus
from iml_hf.tasks.modmul import ModMulTask


def test_cache_is_keyed_by_arguments_and_seed(tmp_path):
    task = ModMulTask(modulus=8)
    assert corpus_key(task, 0) != corpus_key(task, 1)
    assert corpus_key(task, 0) != corpus_key(ModMulTask(modulus=8, definition_repeats=3), 0)
    assert corpus_key(task, 0) == corpus_key(ModMulTask(modulus=8), 0)

    first = load_or_build_corpus(task, 0, tmp_path)
    entries = sorted(p.name for p in (tmp_path / "corpora").iterdir())
    assert entries == [corpus_key(task, 0)]  # no temporary directory left behind
    second = load_or_build_corpus(task, 0, tmp_path)
    assert corpus_fingerprint(first) == corpus_fingerprint(second) == corpus_fingerprint(task.build(0))


def test_cached_corpus_is_reused_not_rebuilt(tmp_path, monkeypatch):
    task = ModMulTask(modulus=8)
    load_or_build_corpus(task, 0, tmp_path)

    def fail(self, seed):
        raise AssertionError("the cached corpus should have been loaded")

    monkeypatch.setattr(ModMulTask, "build", fail)
    assert len(load_or_build_corpus(task, 0, tmp_path)["train"]) > 0
