"""LoRA networks (peft) and the kohya LoRA file format: keys, metadata, saving, verifying."""
