"""Where a result came from: package versions, the git commit of iml_hf's source, the date and the
command line, recorded in results.json (``provenance``) and the report's summary.

Nothing identifying is recorded: no host name, no user name (the home folder in a path reads
``~``), no environment variable, and the value of every command-line key that names a secret
(``--training.hub_token=...``, ``--api_key ...``) reads ``REDACTED``. Kept free of torch and
transformers (versions come from ``importlib.metadata``), so ``iml_hf.report`` imports it cheaply.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

#: The libraries whose versions a run records (the model card lists the same).
LIBRARIES = ("iml_hf", "torch", "transformers", "datasets", "accelerate", "tokenizers", "huggingface_hub")
#: A command-line key whose value is never recorded: one of its ``_``/``-``/``.``-separated words is one of these.
SECRET_WORDS = frozenset(
    {"token", "password", "passwd", "secret", "key", "apikey", "credential", "credentials", "auth"}
)
REDACTED = "REDACTED"
#: Seconds a ``git`` call may take before the commit is given up as unknown.
GIT_TIMEOUT_S = 5.0
#: The folder holding the ``iml_hf`` package: a git checkout's root when installed editable.
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository: iml_hf/utils/provenance.py


def library_versions() -> dict[str, str]:
    """The installed version of every library in ``LIBRARIES`` ("not installed" for a missing one)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(root: Path, *args: str) -> str | None:
    """``git -C root ARGS``'s output, or None when git is missing, fails or takes too long."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )  # read-only: no index refresh
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout iml_hf runs from (dirty: tracked files differ from
    the commit, as ``git describe --dirty`` counts), or None when iml_hf is not the root of a git
    checkout (an installed wheel, a package copied into another project's repository)."""
    root = Path(root or SOURCE_ROOT)
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None:
        return None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _secret(key: str) -> bool:
    """Whether a command-line key (``--training.hub_token``) names a secret."""
    return any(word in SECRET_WORDS for word in re.split(r"[._\-]+", key.lstrip("-").lower()))


def redact(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret keys (``--k=v`` and ``--k v``) replaced by ``REDACTED``
    and the home folder at the start of a path written ``~``."""
    home = str(Path.home())
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-"):
            key, sep, _ = arg.partition("=")
            if _secret(key):
                out.append(f"{key}={REDACTED}" if sep else key)
                hide_next = not sep
                continue
        if home not in ("/", "") and (arg == home or home + os.sep in arg):
            arg = arg.replace(home + os.sep, "~" + os.sep) if arg != home else "~"
        out.append(arg)
    return out


def entry_point(program: str) -> str | None:
    """How the command was started, without the path to it: ``python -m iml_hf.train`` for a
    module of the package (what ``-m`` and ``accelerate launch -m`` leave in ``sys.argv[0]``), the
    script's name for a console script (``iml-train``); None for anything else (a notebook, a test
    runner, a user's script calling the Python API)."""
    path = Path(program)
    package = SOURCE_ROOT / "iml_hf"
    try:
        module = path.resolve().relative_to(package.resolve())
    except (OSError, ValueError):
        return path.name if path.name.startswith("iml-") else None
    parts = ["iml_hf", *module.with_suffix("").parts]
    if parts[-1] == "__main__":
        parts.pop()
    return "python -m " + ".".join(parts)


def command_line(argv: list[str] | None = None) -> str | None:
    """The command that ran, from ``argv`` (default ``sys.argv``) with secrets redacted; None when
    iml_hf was called from Python rather than from its command line."""
    argv = list(sys.argv if argv is None else argv)
    start = entry_point(argv[0]) if argv else None
    if start is None:
        return None
    return " ".join([start, *map(_quote, redact(argv[1:]))])


def _quote(arg: str) -> str:
    """``arg`` as the shell reads it (quoted only where needed; ``~`` left as it is, for the reader)."""
    return arg if re.fullmatch(r"[\w@%+=:,./~-]+", arg) else shlex.quote(arg)


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What made a result: ``versions`` (python and ``LIBRARIES``), ``git`` (commit and dirty flag
    of iml_hf's checkout, or None), ``date`` (UTC, ISO 8601), ``command`` (the command line with
    secrets redacted, or None) and ``invoked`` ("command line" or "Python API")."""
    command = command_line(argv)
    return {
        "versions": {"python": platform.python_version(), **library_versions()},
        "git": git_state(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "invoked": "command line" if command else "Python API",
    }
