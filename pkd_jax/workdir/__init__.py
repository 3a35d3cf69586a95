"""What a training workdir holds, and the one place that reads and writes it: the lock, the config
record (drift checks and amendments), checkpoints and resuming, metrics, the model card, trained networks."""
