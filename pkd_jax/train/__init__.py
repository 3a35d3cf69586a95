"""Training: state, optimizers, jitted steps, sharding, checkpoints and the loop."""
