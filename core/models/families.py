"""The model families Patina trains, stated once: their keys and the names shown for them.

Pure Python (no torch), so that the schema, the GUI and the LoRA file code can all read it.
"""

from __future__ import annotations

from patina.core.errors import PatinaError

FAMILIES = ("sd1", "sd2", "sdxl")
# short names (form fields, plan, verify report) and long names (messages about model files)
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}
# the UNet's cross-attention context width (the text encoder's output) tells the family
FAMILY_BY_CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def check_family(family: str) -> str:
    """*family* in canonical (lower-case) form; a :class:`PatinaError` naming the families when unknown."""
    fam = (family or "").lower()
    if fam not in FAMILIES:
        raise PatinaError(f"Unknown model family {family!r}: expected one of {', '.join(FAMILIES)}.")
    return fam
