"""The Trainer's ``TrainingArguments`` fields (name, type, default, help), read without importing
transformers.

A recipe's ``training:`` and per-stage keys are ``TrainingArguments`` fields. Checking them must not
import transformers, which imports torch: the sweep, the report and :func:`iml_hf.load_recipe` only
read recipes. So the fields are read with :mod:`ast` from the installed
``transformers/training_args.py``, and the enums its annotations name (``IntervalStrategy``...) are
rebuilt from their class bodies. Should the source ever read differently (an upstream refactor),
the class itself is imported instead, so the table is always that of the installed version;
``tests/test_training_fields.py`` checks that both readings agree. Hand-written because no library
lists a dataclass's fields without importing its module.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import enum
import functools
import importlib.util
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from iml_hf.config.validation import field_default

#: A default the source gives as an expression this reader does not evaluate.
UNKNOWN: Any = dataclasses.MISSING


@dataclass(frozen=True)
class TrainingField:
    """One ``TrainingArguments`` init field."""

    name: str
    annotation: Any
    default: Any  # UNKNOWN when it is not a literal
    help: str


class _Unreadable(Exception):
    """The source does not read as this module expects; fall back to importing the class."""


@functools.cache
def training_fields() -> dict[str, TrainingField]:
    """Every ``TrainingArguments`` init field by name, in declaration order."""
    try:
        return _from_source(_package_dir())
    except Exception:  # any source this reader does not understand: the class itself is always right
        return _from_class()


def training_field_types() -> dict[str, Any]:
    """``{field name: type annotation}`` of ``TrainingArguments``."""
    return {name: f.annotation for name, f in training_fields().items()}


def _package_dir() -> Path:
    spec = importlib.util.find_spec("transformers")  # finds, does not import
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("transformers is not installed: pip install the toolkit with its dependencies")
    return Path(spec.origin).parent


def _from_class() -> dict[str, TrainingField]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {
        f.name: TrainingField(f.name, hints.get(f.name, Any), field_default(f), f.metadata.get("help", ""))
        for f in dataclasses.fields(TrainingArguments)
        if f.init
    }


def _from_source(package: Path) -> dict[str, TrainingField]:
    module = ast.parse((package / "training_args.py").read_text(encoding="utf-8"))
    classes = {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}
    if "TrainingArguments" not in classes:
        raise _Unreadable("no class TrainingArguments")
    imported = _imported_from(module, package)
    namespace: dict[str, Any] = {"Any": Any, "Literal": Literal, "Optional": typing.Optional, "Union": typing.Union}
    fields: dict[str, TrainingField] = {}
    for node in classes["TrainingArguments"].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        keywords = _field_keywords(node.value)
        if keywords.get("init") is False or "ClassVar" in ast.unparse(node.annotation):
            continue
        for name in {n.id for n in ast.walk(node.annotation) if isinstance(n, ast.Name)} - set(namespace):
            if not hasattr(builtins, name):
                namespace[name] = _rebuilt_class(name, classes, imported)
        annotation = eval(ast.unparse(node.annotation), namespace)  # a type expression over the names above
        fields[node.target.id] = TrainingField(
            node.target.id, annotation, keywords.get("default", UNKNOWN), str(keywords.get("help", ""))
        )
    if not {"learning_rate", "max_steps", "per_device_train_batch_size"} <= set(fields):
        raise _Unreadable("the fields read do not look like TrainingArguments'")
    return fields


def _imported_from(module: ast.Module, package: Path) -> dict[str, Path]:
    """``{name: file}`` for ``from .x import name`` lines of the module."""
    found = {}
    for node in module.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            base = package.joinpath(*node.module.split("."))
            path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
            found.update({alias.asname or alias.name: path for alias in node.names})
    return found


def _field_keywords(value: ast.expr | None) -> dict[str, Any]:
    """``default``, ``help`` and ``init`` of ``= field(...)`` (or of a plain ``= literal``)."""
    if value is None:
        return {}
    if not (isinstance(value, ast.Call) and _calls_field(value.func)):
        return {"default": _literal(value)}
    found: dict[str, Any] = {}
    for keyword in value.keywords:
        if keyword.arg in ("default", "init"):
            found[keyword.arg] = _literal(keyword.value)
        elif keyword.arg == "default_factory":
            found["default"] = _factory_default(keyword.value)
        elif keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
            for key, item in zip(keyword.value.keys, keyword.value.values):
                if isinstance(key, ast.Constant) and key.value == "help":
                    found["help"] = _literal(item)
    return found


def _calls_field(func: ast.expr) -> bool:
    """``field(...)`` or ``dataclasses.field(...)``."""
    return (isinstance(func, ast.Name) and func.id == "field") or (
        isinstance(func, ast.Attribute) and func.attr == "field"
    )


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return UNKNOWN


def _factory_default(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id in ("list", "dict"):
        return {"list": [], "dict": {}}[node.id]
    if isinstance(node, ast.Lambda):
        return _literal(node.body)
    return UNKNOWN


def _rebuilt_class(name: str, classes: dict[str, ast.ClassDef], imported: dict[str, Path]) -> type:
    """The class ``name`` an annotation uses: an enum rebuilt from its string members, or an opaque
    stand-in for anything else (``ParallelismConfig``: values of it are not checked here)."""
    node = classes.get(name)
    if node is None and name in imported and imported[name].is_file():
        source = ast.parse(imported[name].read_text(encoding="utf-8"))
        node = next((n for n in source.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    members = [
        (item.targets[0].id, item.value.value)
        for item in (node.body if node else [])
        if isinstance(item, ast.Assign)
        and isinstance(item.targets[0], ast.Name)
        and isinstance(item.value, ast.Constant)
        and isinstance(item.value.value, str)
    ]
    if node is not None and members and any("Enum" in ast.unparse(base) for base in node.bases):
        return enum.Enum(name, members, type=str)  # type: ignore[return-value]
    return type(name, (), {})
