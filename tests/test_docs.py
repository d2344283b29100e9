"""The documentation stays true: links stay inside the repository, and guide code runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: A path written in text (``../shared/...``) that climbs out of the page's folder.
CLIMBING_PATH = re.compile(r"(?<![\w/.])(\.\./[\w./-]+)")


def python_blocks(page: Path) -> list[str]:
    """The ```python fenced blocks of a markdown page, in order."""
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    problems = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not path.exists():
            problems.append(f"{target}: does not exist")
    for text in CLIMBING_PATH.findall(page.read_text()):  # e.g. `../shared/papers/...` in prose
        path = (page.parent / text).resolve()
        if not (path.is_relative_to(ROOT) and path.exists()):
            problems.append(f"{text}: a path that is not a file of the repository")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_link_check_catches_a_link_out_of_the_repository(tmp_path: Path) -> None:
    """The check above is not vacuous: a link out of the tree is seen as leaving it."""
    page = ROOT / "docs" / "usage.md"
    target = "../../shared/DESIGN.md"
    assert LINK.findall(f"see [design]({target})") == [target]
    assert not (page.parent / target).resolve().is_relative_to(ROOT)


def test_the_add_a_task_guide_runs(tmp_path: Path) -> None:
    """The guide's task registers, builds its corpus and trains end to end through the API."""
    blocks = python_blocks(ROOT / "docs" / "adding-a-task.md")
    assert len(blocks) == 2
    script = "\n".join(blocks) + (
        "\nimport json\n"
        "print('RESULT', json.dumps({'contrasts': results['contrasts'], 'rows': {s: len(corpus[s]) for s in corpus}}))\n"
    )
    env = {**os.environ, "IML_HF_CACHE": str(tmp_path / "cache")}  # the corpus cache stays in the test's folder
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert set(result["contrasts"]) == {"iml", "stage1"}
    # 30 digit pairs (10 held out) + 4 subsets x 10 variables x (5 definitions + 3 questions)
    assert result["rows"] == {"train": 20 + 4 * 10 * 5 + 2 * 10 * 2, "test": 10 + 2 * 10 * 1 + 2 * 10 * 3}
    assert (tmp_path / "runs" / "successor" / "results.json").is_file()
