"""Training the shipped tiny LLaDA: the tokenizer, the synthetic tasks and the training loop."""
