"""Training: the engine's step loop, its events, optimizers, losses, sampling, batches, benchmarks."""
