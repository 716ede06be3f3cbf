"""Benchmarks (not tests): ``python -m glsim_pl.bench <what> [options]``; each prints what it measured."""
