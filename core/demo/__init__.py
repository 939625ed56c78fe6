"""The demo: a procedural toy world, the tiny base model Patina pretrains on it, and its judge."""
