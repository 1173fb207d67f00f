"""The training loop, checkpoints and distributed set-up."""
