"""Corpus caching keyed by a hash of the task arguments."""

from __future__ import annotations

from iml_hf.data.corpus import corpus_fingerprint, corpus_key, load_or_build_corpus
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


def _entry(tmp_path, task, seed):
    return tmp_path / "corpora" / corpus_key(task, seed)


def _arrow_files(entry):
    return sorted(entry.rglob("*.arrow"))


def test_damaged_or_foreign_cache_entries_are_rebuilt_with_a_warning(tmp_path, caplog):
    """A truncated or garbled entry, another seed's rows copied in (with or without its record) and
    an entry without a record are each rebuilt to the true corpus, never used."""
    import logging
    import shutil

    task = ModMulTask(modulus=8)
    truth = corpus_fingerprint(task.build(0))
    load_or_build_corpus(task, 1, tmp_path)
    other = _entry(tmp_path, task, 1)

    def damage_truncate(entry):
        arrow = _arrow_files(entry)[0]
        arrow.write_bytes(arrow.read_bytes()[:100])

    def damage_garble(entry):
        arrow = _arrow_files(entry)[-1]
        data = bytearray(arrow.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
        arrow.write_bytes(bytes(data))

    def other_seeds_rows(entry):
        for ours, theirs in zip(_arrow_files(entry), _arrow_files(other)):
            shutil.copyfile(theirs, ours)

    def other_seeds_folder(entry):
        shutil.rmtree(entry)
        shutil.copytree(other, entry)

    def no_record(entry):
        (entry / "entry.json").unlink()

    for damage in (damage_truncate, damage_garble, other_seeds_rows, other_seeds_folder, no_record):
        load_or_build_corpus(task, 0, tmp_path)
        damage(_entry(tmp_path, task, 0))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="iml_hf.data.corpus"):
            rebuilt = load_or_build_corpus(task, 0, tmp_path)
        assert corpus_fingerprint(rebuilt) == truth, damage.__name__
        assert "is unusable" in caplog.text and "rebuilding it" in caplog.text, damage.__name__
        assert corpus_fingerprint(load_or_build_corpus(task, 0, tmp_path)) == truth  # the rebuilt entry is good
