"""The command line's recipe parser: ``RECIPE.yaml [--key=value ...]`` into a Recipe.

Precedence is dataclass default < recipe < command line (TRL's ``TrlParser`` habit: the YAML
becomes the defaults of an argparse parser, so overrides and ``--help`` work). Keys are dotted
paths: ``seed``, ``task.modulus``, ``model.num_layers``, ``training.learning_rate``,
``evaluation.eval_steps`` and, for a stage named ``x1``, ``stages.x1.max_steps``. A key that does
not exist is an error naming the closest valid one.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from iml_hf.config.keys import flatten, key_types
from iml_hf.config.recipe import Recipe, with_overrides
from iml_hf.config.recipe_files import load_yaml_origins
from iml_hf.config.validation import RecipeError, conform_cli


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """The recipe path (first positional argument or ``--config``) and the remaining arguments."""
    rest = list(argv)
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            return rest[i + 1], rest[:i] + rest[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], rest[:i] + rest[i + 1 :]
    if rest and not rest[0].startswith("-"):
        return rest[0], rest[1:]
    return None, rest


def _overrides(argv: list[str], types: dict[str, Any], prog: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``--key=value`` arguments, each value read against its key's type, and where each came from
    (``"on the command line: --key=value"``). ``--help`` never reaches this parser
    (``iml_hf.config.help.handle_info_flags`` answers it first)."""
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, add_help=False)
    parser.add_argument("config", nargs="?")
    for key in sorted(types):
        parser.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS)
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        name = flag[2:].split("=", 1)[0]
        match = difflib.get_close_matches(name, sorted(types), n=1, cutoff=0.4)
        hint = f"; did you mean '--{match[0]}'?" if match else ""
        raise RecipeError(f"unknown argument '{flag}'{hint}")
    values = {k: v for k, v in vars(known).items() if k != "config"}
    from iml_hf.utils.provenance import redact  # an error message never shows a token's value

    origins = {k: f"on the command line: {redact([f'--{k}={v}'])[0]}" for k, v in values.items()}
    conformed: dict[str, Any] = {}
    for key, value in values.items():
        try:
            conformed[key] = conform_cli(key, value, types[key]) if isinstance(value, str) else value
        except RecipeError as error:
            raise RecipeError(f"{error} ({origins[key]})") from None
    return conformed, origins


def parse_recipe(argv: list[str], prog: str = "iml_hf.train") -> Recipe:
    """Parse ``RECIPE.yaml [--key=value ...]`` (or ``--config RECIPE.yaml``) into a Recipe.

    ``--help``, ``--help-all`` and ``--version`` print and exit (``SystemExit(0)``), and so does a bare
    command (the usage, ``SystemExit(2)``): this is the command line's parser; :func:`iml_hf.load_recipe`
    is the Python one."""
    path, rest = _split_config(argv)
    if path is None and not rest or {"-h", "--help", "--help-all", "--version"} & set(rest):
        from iml_hf.config.help import handle_info_flags

        handle_info_flags(path, rest, prog)
    nested, origins = load_yaml_origins(path) if path else ({}, {})
    task = nested.setdefault("task", {}) if isinstance(nested.get("task", {}), dict) else {}
    for i, arg in enumerate(rest):  # the task decides which task.* keys exist
        if arg.startswith("--task.name="):
            task["name"] = arg.split("=", 1)[1]
        elif arg == "--task.name" and i + 1 < len(rest):
            task["name"] = rest[i + 1]
    where = f"in {path}" if path else "on the command line"
    flat = flatten(nested, where, origins)  # recipe typos are reported before command-line ones
    overrides, given = _overrides(rest, key_types(nested, where), prog)
    return with_overrides(nested, flat, overrides, path, {**origins, **given})
