"""Data: the corpus a task generates, its tokenizer, the collators and stage training sets, the corpus card."""
