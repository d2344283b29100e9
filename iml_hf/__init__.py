"""iml_hf: implicit meta-learning experiments on the Hugging Face stack."""

__version__ = "0.1.0"
