"""Patina core: everything that is not Qt (schema, dataset, models, networks, engine, export, CLI).

This package never imports PySide6 and runs headless.
"""

__version__ = "0.1.0"
