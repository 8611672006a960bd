"""Training the embedded test model from scratch: tokenizer, data, trainer, session, model card."""
