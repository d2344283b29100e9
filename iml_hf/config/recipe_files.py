"""Recipe files: YAML read safely, duplicate keys refused, ``base:`` recipes merged, and the line
each dotted key was set on remembered, so that an error can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from iml_hf.config.args import FROM_SCRATCH_KEYS
from iml_hf.config.keys import SECTIONS
from iml_hf.config.validation import RecipeError


def merge_recipes(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key; a child's ``stages`` list is the run's
    stages in order, each inheriting the keys of the base stage of the same name (so
    ``- name: knowledge`` alone keeps that stage as it is); anything else is replaced."""
    merged = dict(base)
    for key, value in child.items():
        if key == "stages" and isinstance(value, list) and isinstance(base.get("stages"), list):
            inherited = {s.get("name"): s for s in base["stages"] if isinstance(s, dict)}
            merged["stages"] = [
                merge_recipes(inherited[stage["name"]], stage)
                if isinstance(stage, dict) and stage.get("name") in inherited
                else stage
                for stage in value
            ]
        elif key == "model" and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_recipes(_without_scratch_keys(base[key], value), value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_recipes(base[key], value)
        else:
            merged[key] = value
    return merged


def _without_scratch_keys(base_model: dict[str, Any], child_model: dict[str, Any]) -> dict[str, Any]:
    """A base's model section as a child inherits it: a child that names a checkpoint replaces the
    base's from-scratch description (architecture, sizes) instead of contradicting it."""
    if child_model.get("model_name_or_path") is None:
        return base_model
    return {k: v for k, v in base_model.items() if k not in FROM_SCRATCH_KEYS}


def load_yaml(path: str) -> dict[str, Any]:
    """Read a recipe file; an unreadable or non-mapping file is a RecipeError. A ``base:`` key
    names a recipe (relative to this file) that this one extends, stating only what differs."""
    return load_yaml_origins(path)[0]


def load_yaml_origins(path: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`load_yaml`, and where each dotted key was set (``"in recipes/toy.yaml line 27"``; with
    ``base:``, the file that set the value), so an error can point at the line."""
    try:
        text = Path(path).read_text()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_duplicate_keys(node, path)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path!r} does not exist") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe file {path!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path!r} must hold a mapping of keys")
    origins = _key_lines(node, path)
    base = data.pop("base", None)
    if base is None:
        return data, origins
    base_path = str(Path(path).parent / base)
    if Path(base_path).resolve().as_posix() in _seen:
        raise RecipeError(f"recipe {path!r}: 'base: {base}' makes a cycle")
    base_data, base_origins = load_yaml_origins(base_path, (*_seen, Path(path).resolve().as_posix()))
    return merge_recipes(base_data, data), {**base_origins, **origins}


def _key_lines(node: yaml.Node | None, path: str) -> dict[str, str]:
    """Dotted key -> ``"in <path> line <n>"`` for every key of a recipe file's node tree."""

    def at(key_node: yaml.Node) -> str:
        return f"in {path} line {key_node.start_mark.line + 1}"

    origins: dict[str, str] = {}
    for key_node, value_node in node.value if isinstance(node, yaml.MappingNode) else []:
        key = str(key_node.value)
        if key == "stages" and isinstance(value_node, yaml.SequenceNode):
            for item in value_node.value:
                pairs = item.value if isinstance(item, yaml.MappingNode) else []
                name = next((v.value for k, v in pairs if k.value == "name" and isinstance(v, yaml.ScalarNode)), None)
                origins.update({f"stages.{name}.{k.value}": at(k) for k, _ in pairs if name and k.value != "name"})
        elif key in SECTIONS and isinstance(value_node, yaml.MappingNode):
            origins.update({f"{key}.{k.value}": at(k) for k, _ in value_node.value})
        else:
            origins[key] = at(key_node)
    return origins


def _check_duplicate_keys(node: yaml.Node | None, path: str, where: str = "") -> None:
    """A key given twice in one mapping (YAML would silently keep the last) is an error naming the
    dotted key (``model.num_layers``, ``stages.x1.max_steps``) and both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{where}.{key}" if where else str(key)
            if key is not None and key in seen:
                raise RecipeError(
                    f"recipe file {path!r}: duplicate key '{dotted}' (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last, so give it once"
                )
            if key is not None:
                seen[key] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, path, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            name = None
            if isinstance(item, yaml.MappingNode):
                name = next(
                    (
                        v.value
                        for k, v in item.value
                        if getattr(k, "value", None) == "name" and isinstance(v, yaml.ScalarNode)
                    ),
                    None,
                )
            _check_duplicate_keys(item, path, f"{where}.{name}" if name else f"{where}[{i}]")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)
