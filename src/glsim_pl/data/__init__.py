"""Datasets and the input pipeline: file layouts, image reading, transforms, the cache, sampling, the data check."""
