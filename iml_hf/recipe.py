"""Moved to iml_hf.config (re-exported until the re-layout is complete)."""

from iml_hf.config import *  # noqa: F401,F403
from iml_hf.config.args import RunArguments  # noqa: F401
from iml_hf.config.keys import RESERVED_TRAINING_KEYS, SECTION_CLASSES, SECTIONS, TRAINING_DEFAULTS  # noqa: F401
from iml_hf.config.recipe import machine_defaults  # noqa: F401
