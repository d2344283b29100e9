"""Value checks for recipes: every value's type and range, each error naming the dotted key.

``conform(key, value, annotation)`` checks one value against a field's type (``int``, ``float``,
``bool``, ``str``, ``X | None``, ``list[str]``, ``dict[str, float]``, ``Literal[...]``, an
``Enum | str`` of choices, as ``TrainingArguments`` writes them) and returns it, numeric strings
turned into numbers (YAML reads ``2e-5`` as a string). The ``check_*`` helpers check ranges; the
argument dataclasses call them in ``__post_init__``, and :data:`TRAINING_RANGES` holds the ranges of
the ``TrainingArguments`` fields a recipe sets under ``training:`` or a stage. Every error is a
:class:`RecipeError` that reads ``<key>=<value> is not valid: expected <what>``.

:func:`check_sequence_lengths` is the one check that needs the tokenized corpus.

This module imports nothing of the toolkit, so argument dataclasses and tasks can use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe or command line that cannot be run; the message says what to change."""


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def suggest(name: object, valid: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, or ``""``."""
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.4)
    return f"; did you mean '{match[0]}'?" if match else ""


def invalid(key: str, value: Any, expected: str) -> RecipeError:
    """The error for ``key=value``, saying what was expected."""
    return RecipeError(f"{key}={value!r} is not valid: expected {expected}")


# --------------------------------------------------------------------------------------- types


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _numeric(annotation: Any) -> bool:
    return any(m in (int, float) for m in _members(annotation))


def describe(annotation: Any) -> str:
    """A type in words: ``an integer``, ``a number``, ``true or false``, ``a list of strings``..."""
    members = _members(annotation)
    if len(members) > 1:
        enums = [m for m in members if _is_enum(m)]
        if enums and str in members:  # TrainingArguments' "SchedulerType | str": a choice
            rest = [m for m in members if m is not str and not _is_enum(m)]
            return " or ".join([_choices(enums[0]), *(describe(m) for m in rest)])
        return " or ".join(dict.fromkeys(describe(m) for m in members))
    if annotation is type(None) or annotation is None:
        return "null"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if typing.get_origin(annotation) is typing.Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if _is_enum(annotation):
        return _choices(annotation)
    origin, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if origin is list:
        return f"a list of {_plural(args[0])}" if args and args[0] is not Any else "a list"
    if origin is dict:
        if len(args) == 2 and args[1] is not Any:
            return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory called, an Enum as its value), or
    ``dataclasses.MISSING`` for a required field."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    return value.value if isinstance(value, enum.Enum) else value


def _choices(enum_class: type[enum.Enum]) -> str:
    return f"one of {[e.value for e in enum_class]}"


def _plural(annotation: Any) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(annotation, describe(annotation))


class _Mismatch(Exception):
    pass


def _match(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (an int for a float field becomes a float), or _Mismatch."""
    if annotation is Any or annotation is object:
        return value
    if annotation is type(None) or annotation is None:
        if value is None:
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1.0e3 in YAML
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value) if isinstance(value, int) else value
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if typing.get_origin(annotation) is typing.Literal:
        if value in typing.get_args(annotation) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if _is_enum(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, str) and value in {e.value for e in annotation}:
            return value
        raise _Mismatch
    members = _members(annotation)
    if len(members) > 1:
        enums = [m for m in members if _is_enum(m)]
        if enums and str in members and isinstance(value, str):  # "SchedulerType | str": a choice
            return _match(value, enums[0])
        for member in members:
            try:
                return _match(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    origin, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [_match(v, args[0]) for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        if len(args) == 2:
            return {_match(k, args[0]): _match(_coerce(v, args[1]), args[1]) for k, v in value.items()}
        return value
    return value  # a type this check does not know (ParallelismConfig): the consumer checks it


def _coerce(value: Any, annotation: Any) -> Any:
    """A numeric string where a number is expected becomes the number."""
    if isinstance(value, str) and _NUMBER.match(value) and _numeric(annotation):
        number = float(value)
        accepts_float = any(m is float for m in _members(annotation))
        return int(number) if not accepts_float and number.is_integer() else number
    return value


def conform(key: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against the field type ``annotation`` (numeric strings coerced); a
    RecipeError naming ``key``, the value and the expected type if it does not fit."""
    try:
        return _match(_coerce(value, annotation), annotation)
    except _Mismatch:
        raise invalid(key, value, describe(annotation)) from None


def _comma_list(text: str, value: Any, annotation: Any) -> Any:
    """A list field's ``a,b`` (or a lone ``a``, where a string does not fit) as the list ``[a, b]``, each
    item read as YAML; the YAML form ``[a, b]`` and anything else pass unchanged."""
    members = _members(annotation)
    if (
        not isinstance(value, str)
        or text.lstrip().startswith(("[", "{"))
        or not any((typing.get_origin(m) or m) is list for m in members)
    ):
        return value
    if "," not in text and str in members:  # report_to=wandb: the string form fits
        return value
    items = []
    for item in (part.strip() for part in text.split(",")):
        try:
            items.append(yaml.safe_load(item) if item else item)
        except yaml.YAMLError:
            items.append(item)
    return items


def conform_cli(key: str, text: str, annotation: Any) -> Any:
    """A ``--key=value`` value: read as YAML (``true``, ``3``, ``[a, b]``), or kept as the string
    it is when that fits the field and the YAML reading does not (``--task.reliable_tag=yes``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    value = _comma_list(text, value, annotation)
    try:
        return _match(_coerce(value, annotation), annotation)
    except _Mismatch:
        if isinstance(value, (bool, int, float)):  # a word YAML read as a scalar: yes, 123
            try:
                return _match(text, annotation)
            except _Mismatch:
                pass
        raise invalid(key, value, describe(annotation)) from None


# -------------------------------------------------------------------------------------- ranges


def _finite(key: str, value: Any, expected: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(key, value, expected)


def check_at_least(key: str, value: Any, low: float, what: str = "an integer", note: str = "") -> None:
    """``value >= low`` (None passes: an optional field left unset); ``note`` follows the range."""
    expected = f"{what} >= {low}{f' ({note})' if note else ''}"
    if value is not None:
        _finite(key, value, expected)
        if value < low:
            raise invalid(key, value, expected)


def check_positive(key: str, value: Any, what: str = "a number") -> None:
    """``value > 0`` and finite (None passes)."""
    expected = f"{what} > 0"
    if value is not None:
        _finite(key, value, expected)
        if not value > 0:
            raise invalid(key, value, expected)


def check_between(
    key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """``value`` in the interval from ``low`` to ``high`` (open or closed at each end; None passes)."""
    expected = (
        f"a number strictly between {low} and {high}"
        if low_open and high_open
        else f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    )
    if value is None:
        return
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above or math.isnan(value):
        raise invalid(key, value, expected)


def check_fractions(shares: dict[str, float]) -> None:
    """Each ``task.fraction_<subset>`` in [0, 1], summing to more than 0 and at most 1."""
    for subset, share in shares.items():
        check_between(f"task.fraction_{subset}", share, 0, 1)
    if not 0 < sum(shares.values()) <= 1 + 1e-9:
        raise ValueError(f"task.fraction_* must sum to more than 0 and at most 1, got {shares}")


def check_choice(key: str, value: Any, choices: tuple | list, hint: str = "") -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise invalid(key, value, f"one of {list(choices)}{hint}")


def _max_steps(key: str, value: Any) -> None:
    if value is not None and value != -1 and value < 1:
        raise invalid(key, value, "an integer >= 1, or -1 to train for num_train_epochs")


#: Ranges of the TrainingArguments fields (``training.<key>`` and ``stages.<stage>.<key>``).
TRAINING_RANGES: dict[str, Callable[[str, Any], None]] = {
    "learning_rate": lambda k, v: check_positive(k, v),
    "max_steps": _max_steps,
    "num_train_epochs": lambda k, v: check_positive(k, v),
    "per_device_train_batch_size": lambda k, v: check_at_least(k, v, 1),
    "per_device_eval_batch_size": lambda k, v: check_at_least(k, v, 1),
    "gradient_accumulation_steps": lambda k, v: check_at_least(k, v, 1),
    "eval_accumulation_steps": lambda k, v: check_at_least(k, v, 1),
    "warmup_steps": lambda k, v: check_at_least(k, v, 0, "a number", "steps, or a share of the steps below 1"),
    "weight_decay": lambda k, v: check_at_least(k, v, 0, "a number"),
    "max_grad_norm": lambda k, v: check_at_least(k, v, 0, "a number"),
    "adam_beta1": lambda k, v: check_between(k, v, 0, 1, high_open=True),
    "adam_beta2": lambda k, v: check_between(k, v, 0, 1, high_open=True),
    "adam_epsilon": lambda k, v: check_at_least(k, v, 0, "a number"),
    "label_smoothing_factor": lambda k, v: check_between(k, v, 0, 1, high_open=True),
    "logging_steps": lambda k, v: check_positive(k, v),
    "save_steps": lambda k, v: check_positive(k, v),
    "eval_steps": lambda k, v: check_positive(k, v),
    "save_total_limit": lambda k, v: check_at_least(k, v, 0),
    "dataloader_num_workers": lambda k, v: check_at_least(k, v, 0),
    "torch_empty_cache_steps": lambda k, v: check_at_least(k, v, 1),
    "data_seed": lambda k, v: check_at_least(k, v, 0),
    "ddp_timeout": lambda k, v: check_at_least(k, v, 1),
}


def check_training_value(key: str, value: Any) -> None:
    """The range of a ``training.<field>`` or ``stages.<stage>.<field>`` value."""
    check = TRAINING_RANGES.get(key.rsplit(".", 1)[-1])
    if check is not None:
        check(key, value)


# -------------------------------------------------------------------------------------- stages

_BAD_NAME = re.compile(r"[./\s]")


def check_stages(stages: Any, where: str) -> None:
    """``stages`` is a list of mappings, each with a unique ``name``: a non-empty string without
    ``.``, ``/`` or whitespace (names become keys ``stages.<name>.<key>`` and folder names)."""
    if stages is None:
        return
    if isinstance(stages, dict):
        as_list = [{"name": name, **(body if isinstance(body, dict) else {})} for name, body in stages.items()]
        example = yaml.safe_dump({"stages": as_list}, sort_keys=False, default_flow_style=None).rstrip()
        raise RecipeError(
            f"stages must be a list of mappings, one per stage and each with a name, not a "
            f"mapping ({where}); write it as\n{example}"
        )
    if not isinstance(stages, list):
        raise invalid(
            "stages", stages, f"a list of mappings, one per stage ({where}), e.g. [{{name: x1, train_subsets: [x1t]}}]"
        )
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise invalid(f"stages[{i}]", stage, f"a mapping with a name and train_subsets ({where})")
        if "name" not in stage:
            raise RecipeError(f"stages[{i}].name is missing: every stage needs a name ({where})")
        name = stage["name"]
        if not isinstance(name, str) or not name or _BAD_NAME.search(name):
            raise invalid(
                f"stages[{i}].name",
                name,
                f"a non-empty string without '.', '/' or whitespace, e.g. 'x1' or 'stage_2' ({where})",
            )
        if name in seen:
            raise RecipeError(f"stages[{i}].name={name!r} is not valid: expected a name no other stage has ({where})")
        seen.add(name)


# ------------------------------------------------------------------------------------ sequences


def sequence_limit(model: Any) -> int | None:
    """The longest sequence a from-scratch model (``model``: ModelArguments) takes, or None for a
    checkpoint (whose config fixes it)."""
    if model.model_name_or_path is not None:
        return None
    overrides = model.config_overrides or {}
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(overrides.get(key), int):
            return overrides[key]
    return model.max_position_embeddings


def check_sequence_lengths(recipe: Any, tokenized: Any) -> None:
    """Every tokenized row (``input_ids`` of every split) fits the model's positions; else a
    RecipeError naming ``model.max_position_embeddings``, the longest sequence and the fix."""
    limit = sequence_limit(recipe.model)
    if limit is None:
        return
    longest, where = 0, None
    for split, rows in tokenized.items():
        lengths = [len(ids) for ids in rows["input_ids"]]
        if lengths and max(lengths) > longest:
            longest, where = max(lengths), split
    if longest > limit:
        raise RecipeError(
            f"model.max_position_embeddings={limit} is not valid: the corpus's longest sequence ({where} split) "
            f"has {longest} tokens; set --model.max_position_embeddings={_round_up(longest)} (or more)"
        )


def _round_up(n: int) -> int:
    return 1 << (n - 1).bit_length()
