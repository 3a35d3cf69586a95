"""Helpers for tests and benchmarks: `torch_reference`, PyTorch networks written from the paper's and
the released code's definitions, against which the parity tests and `benchmarks/torch_compare.py` check
and time the Flax models. Importing it needs the `dev` extra (torch)."""
