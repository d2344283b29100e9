"""Moved to iml_hf.config.validation (re-exported until the re-layout is complete)."""

from iml_hf.config.validation import *  # noqa: F401,F403
from iml_hf.config.validation import RecipeError, _coerce, suggest  # noqa: F401
