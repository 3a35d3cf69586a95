"""Training: setup, the loop, the jitted steps and state, sharding, evaluation, and the student's teachers."""
