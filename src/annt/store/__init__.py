"""Durable storage: atomic writes, checksums, checkpoints, adversarial sets."""
