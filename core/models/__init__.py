"""Base models: detecting and loading SD1/SD2/SDXL checkpoints offline, text encoding, tiny test models."""
