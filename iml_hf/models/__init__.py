"""Models: causal LMs built from scratch (GPT-2, Llama, GPT-NeoX configs) or loaded from a checkpoint."""
