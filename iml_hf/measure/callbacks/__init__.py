"""Trainer callbacks that measure during training; each emits through ``interval.IntervalCallback``."""
