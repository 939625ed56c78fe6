"""kohya_ss settings Patina does not carry over, and what each would have changed.

The kohya_ss importer (:func:`patina.core.config.files.import_kohya`) maps every key Patina has by name; this
module says what to tell the user about the others, so that no setting is dropped silently:

* a value that changes nothing (kohya_ss's default, empty, off) is skipped and only counted;
* a key kohya_ss itself ignores for the preset's LoRA type (``train_on_input`` outside iA3, ``unit`` outside
  DyLoRA…) is listed as having no effect;
* any other value is listed as not carried over, with what it would have changed.

The LyCORIS facts are those of LyCORIS's network arguments as kohya_ss passes them (``kohya_gui/lora_gui.py``
builds ``network_args`` per LoRA type) and ``shared/reference/lora-format.md`` §2.
"""

from __future__ import annotations

from typing import Any, Mapping

# kohya_ss LoRA types whose modules are LyCORIS's (kohya_ss passes them LyCORIS's network arguments)
_LYCORIS_TYPES = ("LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "LyCORIS/GLoRA", "LyCORIS/DyLoRA",
                  "LyCORIS/BOFT", "LyCORIS/Diag-OFT", "LyCORIS/iA3", "LyCORIS/Native Fine-Tuning")
_LOCON_LOHA_LOKR = ("LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr")

# key -> the kohya_ss LoRA types that pass it to the trainer (every other type ignores it)
ONLY_FOR: dict[str, tuple[str, ...]] = {
    "train_on_input": ("LyCORIS/iA3",),
    "unit": ("Kohya DyLoRA", "LyCORIS/DyLoRA"),
    "constrain": ("LyCORIS/Diag-OFT",),
    "rescaled": ("LyCORIS/Diag-OFT",),
    "use_scalar": _LOCON_LOHA_LOKR,
    "bypass_mode": _LOCON_LOHA_LOKR,
    "dora_wd": _LOCON_LOHA_LOKR,
    "use_cp": ("LyCORIS/LoKr",),  # LyCORIS's older name of use_tucker; kohya_ss passes it for LoKr only
    "use_tucker": _LYCORIS_TYPES,
    "train_norm": _LYCORIS_TYPES,
    "LyCORIS_preset": _LYCORIS_TYPES,
}

# key -> values that change nothing (kohya_ss's defaults), beside empty/off/0
NO_EFFECT: dict[str, tuple[Any, ...]] = {
    "num_cpu_threads_per_process": (2, "2"),
    "num_processes": (1, "1"),
    "num_machines": (1, "1"),
    "unit": (1, "1"),
    "train_on_input": (True,),
    "LyCORIS_preset": ("full",),  # the layers Patina adapts, nearly (lycoris_notes says how they differ)
    "log_with": ("tensorboard",),
}

_TUCKER = ("would have given each 3×3 convolution's factors a Tucker core (fewer weights for the ResNet "
           "convolutions, a file layout fewer loaders read); Patina trains them in the plain layout")

# key -> what the setting would have changed
WOULD_CHANGE: dict[str, str] = {
    "use_tucker": _TUCKER,
    "use_cp": _TUCKER,
    "train_norm": "would also have trained the weight and bias of every normalisation layer (w_norm/b_norm "
                  "tensors in the file)",
    "use_scalar": "would have put a trainable scale, starting at 0, in front of every module's update",
    "dora_wd": "would have trained DoRA (weight-decomposed) modules, with a dora_scale tensor per module",
    "bypass_mode": "would have added the update beside the frozen weight instead of into it (for quantised "
                   "base models); the trained file is the same",
    "rank_dropout": "would have dropped rows of each module's update during training (a regulariser); Patina "
                    "has it for LoHa and LoKr, and network_dropout for LoRA/LoCon",
    "module_dropout": "would have skipped whole modules at random during training (a regulariser); Patina has "
                      "it for LoHa and LoKr, and network_dropout for LoRA/LoCon",
    "LyCORIS_preset": "would have chosen another set of layers to adapt; Patina adapts LyCORIS's \"full\" set",
    "max_data_loader_n_workers": "sets worker processes that load images; Patina loads them in the training "
                                 "loop (the result is the same)",
    "num_cpu_threads_per_process": "sets CPU threads for accelerate; Patina runs one process (same result)",
    "num_processes": "would have trained on several GPUs; Patina trains on one",
    "num_machines": "would have trained on several machines; Patina trains on one",
    "log_with": "would have logged to another tracker; Patina logs to TensorBoard and metrics.jsonl in the "
                "logging folder",
    "full_bf16": "would have kept the LoRA weights in bf16; Patina trains them in fp32 under bf16 mixed "
                 "precision (more memory, steadier)",
    "full_fp16": "would have kept the LoRA weights in fp16; Patina trains them in fp32 under fp16 mixed "
                 "precision (more memory, steadier)",
    "fp8_base": "would have stored the base model in fp8 to save memory",
    "weighted_captions": "would have read (word:1.2) weights in captions; Patina reads captions as plain text",
    "stop_text_encoder_training": "would have stopped training the text encoder after that many steps",
    "stop_text_encoder_training_pct": "would have stopped training the text encoder after that share of steps",
    "masked_loss": "would have weighted the loss by a mask image per picture",
    "dataset_config": "would have described the dataset in a TOML file; Patina reads the image folder's "
                      "10_name folders",
}


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def changes_nothing(key: str, value: Any) -> bool:
    """True for empty, off, 0 or kohya_ss's default value of *key*."""
    if value is None or value is False or (isinstance(value, str) and value.strip() in ("", "0", "0.0")):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return True
    return any(_same(value, d) for d in NO_EFFECT.get(key, ()))


def ignored_by_type(key: str, lora_type: str) -> bool:
    """True when kohya_ss itself does not pass *key* to the trainer for *lora_type*."""
    return key in ONLY_FOR and lora_type not in ONLY_FOR[key]


def why_not_carried(key: str, value: Any, src: Mapping[str, Any]) -> str:
    """What *key* = *value* would have changed in kohya_ss (for the import report)."""
    if key in ("use_cp", "use_tucker") and _full_lokr(src):
        return ("no effect here: LoKr factors at rank 100000 are full matrices, which LyCORIS never splits with "
                "a Tucker core")
    return WOULD_CHANGE.get(key, "Patina has no such setting")


def _full_lokr(src: Mapping[str, Any]) -> bool:
    from patina.core.config.schema import LOKR_FULL_DIM

    try:
        return src.get("LoRA_type") == "LyCORIS/LoKr" and float(src.get("conv_dim") or 0) >= LOKR_FULL_DIM
    except (TypeError, ValueError):
        return False


def lycoris_notes(src: Mapping[str, Any], lora_type: str) -> list[str]:
    """Import notes on LyCORIS settings Patina honours in its own way."""
    notes = []
    if lora_type in _LOCON_LOHA_LOKR and str(src.get("LyCORIS_preset", "full")) == "full":
        notes.append('LyCORIS_preset "full": Patina adapts the same attention, ResNet, down/upsampling and text '
                     "encoder layers, but not conv_in, conv_out and the time embedding")
    try:
        rank_dropout = float(src.get("rank_dropout") or 0)
    except (TypeError, ValueError):
        rank_dropout = 0.0
    if lora_type == "LyCORIS/LoHa" and rank_dropout > 0 and not src.get("rank_dropout_scale"):
        notes.append("rank_dropout: Patina's LoHa rescales the rows it keeps (as rank_dropout_scale would)")
    return notes
