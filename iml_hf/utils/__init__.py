"""Shared utilities: atomic file writes, provenance, console output."""
