"""pkd_jax."""
