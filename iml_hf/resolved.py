"""Moved to iml_hf.config.resolved."""

from iml_hf.config.resolved import *  # noqa: F401,F403
