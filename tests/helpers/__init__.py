"""Helpers the tests share: composed configs, tiny checkpoints, data trees, a Hugging Face cache layout."""
