"""Training the embedded demo model: corpus, tokenizer, a fast differentiable scan, the loop."""
