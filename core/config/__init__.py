"""Configuration: the parameter schema, config files and presets, kohya_ss interop."""
