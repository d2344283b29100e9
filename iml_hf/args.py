"""Moved to iml_hf.config.args (re-exported until the re-layout is complete)."""

from iml_hf.config.args import *  # noqa: F401,F403
from iml_hf.config.measurement_args import *  # noqa: F401,F403
