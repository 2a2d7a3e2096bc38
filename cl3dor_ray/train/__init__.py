"""Training: the odds-ratio loss, the per-worker loop, the TorchTrainer set-up."""
