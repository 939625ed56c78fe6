"""The captioning models Patina knows: where each is published, which files it needs and about how big it is
(for the "this needs a download of N MB" message before anything is fetched).
"""

from __future__ import annotations

from dataclasses import dataclass

from patina.core.errors import PatinaError

BLIP, WD14 = "blip", "wd14"
HUB_URL = "https://huggingface.co"

# Fetched by a download (a file the repository lacks is skipped): what transformers' save_pretrained writes.
_BLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json",
               "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "tokenizer.json")
# What a folder must hold to be used; each entry lists names of which one is enough (transformers 5 saves
# processor_config.json where the published repositories have preprocessor_config.json).
_BLIP_REQUIRED = (("config.json",), ("model.safetensors",), ("preprocessor_config.json", "processor_config.json"),
                  ("tokenizer_config.json",), ("vocab.txt", "tokenizer.json"))
_WD14_FILES = ("model.onnx", "selected_tags.csv")
_WD14_REQUIRED = (("model.onnx",), ("selected_tags.csv",))


@dataclass(frozen=True)
class CaptionModel:
    key: str                                # the name on the command line: "blip", "wd14-vit-v3", ...
    kind: str                               # BLIP or WD14
    repo: str                               # Hugging Face repository
    size_mb: int                            # about how much a download fetches
    label: str
    files: tuple[str, ...]                  # what a download fetches
    required: tuple[tuple[str, ...], ...]   # what a folder must hold (one name of each entry)

    @property
    def url(self) -> str:
        return f"{HUB_URL}/{self.repo}"

    @property
    def required_names(self) -> list[str]:
        """The required files, each by its first name (for messages)."""
        return [names[0] for names in self.required]


def _blip(key: str, repo: str, size_mb: int, label: str) -> CaptionModel:
    return CaptionModel(key, BLIP, repo, size_mb, label, _BLIP_FILES, _BLIP_REQUIRED)


def _wd14(key: str, repo: str, size_mb: int, label: str) -> CaptionModel:
    return CaptionModel(key, WD14, f"SmilingWolf/{repo}", size_mb, label, _WD14_FILES, _WD14_REQUIRED)


MODELS: dict[str, CaptionModel] = {m.key: m for m in (
    _blip("blip", "Salesforce/blip-image-captioning-base", 990, "BLIP base — sentences"),
    _blip("blip-large", "Salesforce/blip-image-captioning-large", 1880, "BLIP large — sentences"),
    _wd14("wd14-swinv2-v3", "wd-swinv2-tagger-v3", 470, "WD14 SwinV2 v3 — tags"),
    _wd14("wd14-vit-v3", "wd-vit-tagger-v3", 380, "WD14 ViT v3 — tags"),
    _wd14("wd14-convnext-v3", "wd-convnext-tagger-v3", 400, "WD14 ConvNeXT v3 — tags"),
    _wd14("wd14-eva02-large-v3", "wd-eva02-large-tagger-v3", 1270, "WD14 EVA02 large v3 — tags"),
    _wd14("wd14-moat-v2", "wd-v1-4-moat-tagger-v2", 330, "WD14 MOAT v2 — tags"),
    _wd14("wd14-convnextv2-v2", "wd-v1-4-convnextv2-tagger-v2", 400, "WD14 ConvNeXTV2 v2 — tags"),
    _wd14("wd14-swinv2-v2", "wd-v1-4-swinv2-tagger-v2", 470, "WD14 SwinV2 v2 — tags"),
    _wd14("wd14-vit-v2", "wd-v1-4-vit-tagger-v2", 380, "WD14 ViT v2 — tags"),
)}

# Short names: "wd14" is the tagger most people start with.
ALIASES = {"wd14": "wd14-swinv2-v3"}


def model_names() -> list[str]:
    """Every name :func:`get_model` accepts, aliases first."""
    return list(ALIASES) + list(MODELS)


def get_model(name: str) -> CaptionModel:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return MODELS[key]
    except KeyError:
        raise PatinaError(f"--model: unknown captioning model {name!r}; use one of "
                          + ", ".join(model_names())) from None
