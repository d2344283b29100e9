"""An offline stand-in for the Hub behind ``huggingface_hub.HfApi``: it records what would be pushed.

``install(monkeypatch, root)`` replaces ``HfApi.create_repo``, ``create_branch`` and ``upload_folder``
with methods that keep each repo's revisions as folders under ``root/<repo type>/<repo id>/<revision>``,
following the Hub's rules: a new repo's ``main`` is empty, a branch starts as a copy of its parent
revision, an upload adds or replaces the folder's files that ``huggingface_hub``'s own pattern filter
keeps (the same ``filter_repo_objects`` and default ignore patterns ``upload_folder`` applies).
Any other Hub request fails, since the Hub is switched to offline mode.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS


class RecordingHub:
    """Repos, branches and files as folders; every call with its arguments in ``calls``."""

    def __init__(self, root: Path, namespace: str = "me"):
        self.root = Path(root)
        self.namespace = namespace
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def folder(self, repo_id: str, revision: str = "main", repo_type: str | None = None) -> Path:
        """Where ``repo_id`` at ``revision`` is recorded."""
        return self.root / (repo_type or "model") / repo_id / revision

    def create_repo(self, repo_id: str, **kwargs: Any) -> RepoUrl:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        full = repo_id if "/" in repo_id else f"{self.namespace}/{repo_id}"
        main = self.folder(full, "main", kwargs.get("repo_type"))
        if main.exists() and not kwargs.get("exist_ok"):
            raise FileExistsError(full)
        main.mkdir(parents=True, exist_ok=True)
        prefix = "datasets/" if kwargs.get("repo_type") == "dataset" else ""
        return RepoUrl(f"https://huggingface.co/{prefix}{full}")

    def create_branch(self, repo_id: str, *, branch: str, revision: str | None = None, **kwargs: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, "revision": revision, **kwargs}))
        source = self.folder(repo_id, revision or "main", kwargs.get("repo_type"))
        target = self.folder(repo_id, branch, kwargs.get("repo_type"))
        if not source.exists():
            raise FileNotFoundError(f"{repo_id}@{revision or 'main'} does not exist")
        if target.exists():
            if not kwargs.get("exist_ok"):
                raise FileExistsError(f"{repo_id}@{branch}")
            return
        shutil.copytree(source, target)

    def upload_folder(self, *, repo_id: str, folder_path: str | Path, revision: str | None = None,
                      allow_patterns: Any = None, ignore_patterns: Any = None, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": str(folder_path), "revision": revision,
                                             "allow_patterns": allow_patterns, "ignore_patterns": ignore_patterns,
                                             **kwargs}))
        target = self.folder(repo_id, revision or "main", kwargs.get("repo_type"))
        if not target.exists():
            raise FileNotFoundError(f"{repo_id}@{revision or 'main'} does not exist (create the repo or branch first)")
        source = Path(folder_path)
        files = [p.relative_to(source).as_posix() for p in sorted(source.glob("**/*")) if p.is_file()]
        ignore = ([ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or []))
        digest = hashlib.sha1()
        for relative in filter_repo_objects(files, allow_patterns=allow_patterns,
                                            ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, target / relative)
            digest.update(relative.encode() + (source / relative).read_bytes())
        return SimpleNamespace(oid=digest.hexdigest())

    def uploaded(self, method: str = "upload_folder") -> list[dict[str, Any]]:
        """The arguments of every call of ``method``, in order."""
        return [kwargs for name, kwargs in self.calls if name == method]


def install(monkeypatch, root: Path) -> RecordingHub:
    """Route ``HfApi``'s repo, branch and upload calls to a RecordingHub under ``root``; the Hub is offline."""
    hub = RecordingHub(root)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: hub.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: hub.create_branch(repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: hub.upload_folder(**kw))
    return hub
