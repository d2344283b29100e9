"""Analyses of a trained model: layer-wise (logit lens, linearized layers) and linear probes."""
