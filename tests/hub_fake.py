"""An offline stand-in for the Hub behind ``huggingface_hub.HfApi``: it records what would be pushed.

``install(monkeypatch, root)`` replaces ``HfApi.create_repo``, ``create_branch``, ``upload_folder``
and ``list_repo_commits`` with methods that keep each repo's revisions as folders under
``root/<repo type>/<repo id>/<revision>`` and every commit's files under ``.../.commits/<commit id>``,
following the Hub's rules: a new repo's ``main`` holds one empty initial commit, a branch starts as
a copy of its parent revision (a branch or a commit id), an upload first deletes the revision's
files that ``delete_patterns`` match (never ``.gitattributes``) and then adds or replaces the
folder's files that ``huggingface_hub``'s own pattern filter keeps (the same ``filter_repo_objects``
and default ignore patterns ``upload_folder`` applies, appended to a given list in place as
``upload_folder`` does); ``list_repo_commits`` lists a branch's commits newest first. Any other Hub
request fails, since the Hub is switched to offline mode.
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
    """Repos, branches, commits and files as folders; every call with its arguments in ``calls``."""

    def __init__(self, root: Path, namespace: str = "me"):
        self.root = Path(root)
        self.namespace = namespace
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.heads: dict[tuple[str, str, str], str] = {}  # (repo type, repo id, branch) -> commit id
        self.parents: dict[str, tuple[str | None, str]] = {}  # commit id -> (parent commit id, message)

    def folder(self, repo_id: str, revision: str = "main", repo_type: str | None = None) -> Path:
        """Where ``repo_id`` at ``revision`` (a branch or a commit id) is recorded."""
        if (repo_type or "model", repo_id, revision) not in self.heads and revision in self.parents:
            return self.root / (repo_type or "model") / repo_id / ".commits" / revision
        return self.root / (repo_type or "model") / repo_id / revision

    def _commit(self, repo_id: str, branch: str, repo_type: str | None, message: str) -> str:
        """Record the branch's folder as a new commit on top of its head; returns the commit id."""
        key = (repo_type or "model", repo_id, branch)
        tree = self.folder(repo_id, branch, repo_type)
        parent = self.heads.get(key)
        digest = hashlib.sha1(f"{repo_id}\n{parent}\n{message}\n".encode())
        for file in sorted(tree.rglob("*")):
            if file.is_file():
                digest.update(file.relative_to(tree).as_posix().encode() + b"\0" + file.read_bytes())
        oid = digest.hexdigest()
        self.parents[oid] = (parent, message)
        self.heads[key] = oid
        snapshot = self.folder(repo_id, oid, repo_type)
        if not snapshot.exists():
            shutil.copytree(tree, snapshot)
        return oid

    def create_repo(self, repo_id: str, **kwargs: Any) -> RepoUrl:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        full = repo_id if "/" in repo_id else f"{self.namespace}/{repo_id}"
        main = self.folder(full, "main", kwargs.get("repo_type"))
        if main.exists() and not kwargs.get("exist_ok"):
            raise FileExistsError(full)
        if not main.exists():
            main.mkdir(parents=True)
            self._commit(full, "main", kwargs.get("repo_type"), "initial commit")
        prefix = "datasets/" if kwargs.get("repo_type") == "dataset" else ""
        return RepoUrl(f"https://huggingface.co/{prefix}{full}")

    def create_branch(self, repo_id: str, *, branch: str, revision: str | None = None, **kwargs: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, "revision": revision, **kwargs}))
        repo_type = kwargs.get("repo_type") or "model"
        source = self.folder(repo_id, revision or "main", repo_type)
        target = self.folder(repo_id, branch, repo_type)
        if not source.exists():
            raise FileNotFoundError(f"{repo_id}@{revision or 'main'} does not exist")
        if target.exists():
            if not kwargs.get("exist_ok"):
                raise FileExistsError(f"{repo_id}@{branch}")
            return
        shutil.copytree(source, target)
        head = self.heads.get((repo_type, repo_id, revision or "main"), revision)
        self.heads[(repo_type, repo_id, branch)] = head

    def list_repo_commits(self, repo_id: str, *, revision: str | None = None, **kwargs: Any) -> list[SimpleNamespace]:
        self.calls.append(("list_repo_commits", {"repo_id": repo_id, "revision": revision, **kwargs}))
        oid = self.heads.get((kwargs.get("repo_type") or "model", repo_id, revision or "main"))
        if oid is None:
            raise FileNotFoundError(f"{repo_id}@{revision or 'main'} does not exist")
        commits = []
        while oid is not None:
            parent, message = self.parents[oid]
            commits.append(SimpleNamespace(commit_id=oid, title=message))
            oid = parent
        return commits

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        revision: str | None = None,
        allow_patterns: Any = None,
        ignore_patterns: Any = None,
        delete_patterns: Any = None,
        **kwargs: Any,
    ) -> SimpleNamespace:
        given = (
            ignore_patterns if ignore_patterns is None or isinstance(ignore_patterns, str) else list(ignore_patterns)
        )
        self.calls.append(
            (
                "upload_folder",
                {
                    "repo_id": repo_id,
                    "folder_path": str(folder_path),
                    "revision": revision,
                    "allow_patterns": allow_patterns,
                    "ignore_patterns": given,
                    "delete_patterns": delete_patterns,
                    **kwargs,
                },
            )
        )
        target = self.folder(repo_id, revision or "main", kwargs.get("repo_type"))
        if not target.exists():
            raise FileNotFoundError(f"{repo_id}@{revision or 'main'} does not exist (create the repo or branch first)")
        if ignore_patterns is None:  # as upload_folder: a given list is extended in place
            ignore_patterns = []
        elif isinstance(ignore_patterns, str):
            ignore_patterns = [ignore_patterns]
        ignore_patterns += DEFAULT_IGNORE_PATTERNS
        if delete_patterns is not None:
            remote = [p.relative_to(target).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
            for relative in filter_repo_objects(remote, allow_patterns=delete_patterns):
                if relative != ".gitattributes":
                    (target / relative).unlink()
            for folder in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
        source = Path(folder_path)
        files = [p.relative_to(source).as_posix() for p in sorted(source.glob("**/*")) if p.is_file()]
        for relative in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, target / relative)
        message = kwargs.get("commit_message") or "Upload folder using huggingface_hub"
        return SimpleNamespace(oid=self._commit(repo_id, revision or "main", kwargs.get("repo_type"), message))

    def uploaded(self, method: str = "upload_folder") -> list[dict[str, Any]]:
        """The arguments of every call of ``method``, in order."""
        return [kwargs for name, kwargs in self.calls if name == method]


def install(monkeypatch, root: Path) -> RecordingHub:
    """Route ``HfApi``'s repo, branch, upload and commit-listing calls to a RecordingHub under ``root``;
    the Hub is offline."""
    hub = RecordingHub(root)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: hub.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: hub.create_branch(repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: hub.upload_folder(**kw))
    monkeypatch.setattr(HfApi, "list_repo_commits", lambda self, repo_id, **kw: hub.list_repo_commits(repo_id, **kw))
    return hub
