"""Measurement during training: exact match, QA match, per-example gradients, the callbacks and their registry."""
