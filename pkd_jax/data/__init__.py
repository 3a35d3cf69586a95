"""Data loading, corpus formats and synthetic RECOLA-layout corpora (no JAX imports here)."""
