"""The one parameter schema.

(One file on purpose although it is long: it is mostly the :data:`PARAMS` declaration table, and keeping every
parameter's declaration and the validator together is what makes the schema the single place that states them.)

Every training parameter is declared here exactly once: key, type, default, allowed range or choices (and
the labels they are shown by), label, one-line help, placeholder, the page and section it belongs to, when it
is relevant, whether it must be set to train, whether it is an input path that must exist, and the ``ss_*``
key that records it in a LoRA file. The GUI builds its pages from :data:`PARAMS`, JSON save/load and kohya_ss
import/export use it, the CLI's ``--set key=value`` parses through it, and the one validator,
:func:`check_values`, lives here.

Key names are kohya_ss's JSON keys wherever kohya_ss has the parameter (see
../shared/reference/kohya-layout.md §2). Keys Patina adds are marked ``kohya=False``.

Values are plain JSON types (int, float, bool, str). A *config* is a ``dict[str, value]`` holding every
key of the schema.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from patina.core.models.families import FAMILIES as MODEL_FAMILIES
from patina.core.models.families import FAMILY_LABELS as MODEL_FAMILY_LABELS

SCHEMA_VERSION = 2  # 2: max_data_loader_n_workers and persistent_data_loader_workers removed

# Pages, in the order kohya shows them. Sections group fields inside a page.
PAGES = (
    ("model", "Model"),
    ("folders", "Folders"),
    ("metadata", "Metadata"),
    ("basic", "Basic"),
    ("advanced", "Advanced"),
    ("samples", "Samples"),
)

# the model_family setting: the families (patina.core.models.families) and "auto"
FAMILIES = ("auto",) + MODEL_FAMILIES
FAMILY_LABELS = {"auto": "Detect from file", **MODEL_FAMILY_LABELS}

LORA_TYPES = ("Standard", "Kohya LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr")
# LoRA_type -> the algorithm of its modules (LyCORIS's ``algo`` names); LoCon is a LoRA with conv modules
LORA_TYPE_ALGO = {"Standard": "lora", "Kohya LoCon": "lora", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr"}
CONV_LORA_TYPES = ("Kohya LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr")  # the types that adapt 3x3 convolutions
OPTIMIZERS = (
    "AdamW", "AdamW8bit", "PagedAdamW8bit", "Adafactor", "SGDNesterov", "SGDNesterov8bit",
    "Lion", "Lion8bit", "Prodigy", "DAdaptation", "DAdaptAdam",
)
LR_SCHEDULERS = (
    "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial", "adafactor",
)
SAMPLERS = (
    "euler_a", "euler", "ddim", "pndm", "lms", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
    "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a", "k_dpmsolver++",
)
SAMPLER_LABELS = {"k_dpmsolver++": "DPM++ 2M Karras", "dpmsolver++": "DPM++ 2M", "euler_a": "Euler a"}
_SAMPLER_CHOICE_LABELS = tuple((s, f"{label}  ({s})") for s, label in SAMPLER_LABELS.items())


@dataclass(frozen=True)
class Param:
    """One training parameter.

    ``type`` is one of: ``int``, ``float``, ``bool``, ``str`` (one line), ``text`` (multi-line),
    ``choice`` (one of ``choices``; values may be str or int), ``path`` (``path_kind`` says
    ``file``/``dir``), ``resolution`` (``"W,H"``).
    """

    key: str
    type: str
    default: Any
    label: str
    help: str
    page: str
    section: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple = ()
    path_kind: str = ""            # "file" | "dir" | "file_or_dir"
    file_filter: str = ""          # e.g. "Models (*.safetensors *.ckpt)"
    kohya: bool = True             # kohya_ss has this key in its LoRA JSON
    preset: bool = True            # belongs in a preset (False: machine-specific paths, names)
    visible_if: Callable[[Mapping[str, Any]], bool] | None = None
    enabled_if: Callable[[Mapping[str, Any]], bool] | None = None
    check: Callable[[Any], str | None] | None = None  # extra per-value check -> message or None
    also_on: tuple[str, ...] = ()  # other pages that show the same field (one value, two places)
    required: str = ""             # set: must be filled in to train; says what to choose ("the output folder")
    must_exist: bool = False       # a path the run reads: when set, it must exist
    placeholder: str = ""          # grey hint shown in an empty text field
    choice_labels: tuple[tuple[Any, str], ...] = ()  # (choice, label) for choices shown by another name
    ss_key: str = ""               # the ss_* key that records this setting in a LoRA file's metadata

    def is_visible(self, cfg: Mapping[str, Any]) -> bool:
        return self.visible_if(cfg) if self.visible_if else True

    def is_enabled(self, cfg: Mapping[str, Any]) -> bool:
        return self.enabled_if(cfg) if self.enabled_if else True

    @property
    def place(self) -> str:
        """Where the field is in the window: "Model ▸ Pretrained model"."""
        return f"{dict(PAGES)[self.page]} ▸ {self.label}"

    def choice_label(self, value: Any) -> str:
        """How a choice is shown: its label (with the value in brackets when the value is a name people
        meet elsewhere, such as a sampler's), or the value itself."""
        for choice, label in self.choice_labels:
            if choice == value:
                return label
        return str(value)

    def allowed(self) -> str:
        """Plain words for what this parameter accepts (used in messages)."""
        if self.type == "bool":
            return "true or false"
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)
        if self.type in ("int", "float"):
            kind = "a whole number" if self.type == "int" else "a number"
            if self.min is not None and self.max is not None:
                return f"{kind} from {_num(self.min)} to {_num(self.max)}"
            if self.min is not None:
                return f"{kind} ≥ {_num(self.min)}"
            return kind
        if self.type == "resolution":
            return 'a resolution "W,H" such as "512,512" (each 64–4096)'
        if self.type == "path":
            return "a path (text)"
        return "text"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# --- relevance helpers -------------------------------------------------------------------------

def family_of(cfg: Mapping[str, Any]) -> str:
    """The model family the config is for; ``auto`` uses the family detected by the caller (the GUI
    stores it under ``_detected_family``) and stays ``auto`` if unknown."""
    fam = cfg.get("model_family", "auto")
    if fam == "auto":
        return cfg.get("_detected_family") or "auto"
    return fam


def _is_sdxl(cfg):
    return family_of(cfg) in ("sdxl", "auto")


def _is_locon(cfg):
    """A type with convolution modules (LoCon, LoHa, LoKr): shows conv_dim/conv_alpha."""
    return cfg.get("LoRA_type") in CONV_LORA_TYPES


def _is_lycoris(cfg):
    return LORA_TYPE_ALGO.get(cfg.get("LoRA_type")) in ("loha", "lokr")


def _is_lokr(cfg):
    return cfg.get("LoRA_type") == "LyCORIS/LoKr"


def _has_warmup(cfg):
    return cfg.get("lr_scheduler") not in ("constant", "adafactor")


def _noise_original(cfg):
    return cfg.get("noise_offset_type", "Original") == "Original"


def _noise_multires(cfg):
    return cfg.get("noise_offset_type") == "Multires"


def _huber(cfg):
    return cfg.get("loss_type") in ("huber", "smooth_l1")


# --- per-value checks --------------------------------------------------------------------------

MAX_RANK = 512  # the largest low-rank dimension; LoKr alone goes up to LOKR_FULL_DIM
LOKR_FULL_DIM = 100_000  # LyCORIS's way of asking LoKr for full Kronecker factors (kohya_ss's LoKr presets use it)
BUCKET_STEP_MIN = 8  # see bucket_reso_steps
CAPTION_EXTENSION_SUGGESTIONS = (".txt", ".caption", ".cap")
_CAPTION_EXT_RE = re.compile(r"^\.[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,31}$")


def check_caption_extension(value: str) -> str | None:
    """Any file suffix names caption files: a dot, then up to 32 letters, digits or ``. _ - + ~``."""
    if not _CAPTION_EXT_RE.match(value):
        return ('must be a file extension: a dot followed by letters, digits, "-" or "_" (e.g. ".txt"), '
                "with no spaces or path separators")
    from patina.core.dataset.images import IMAGE_EXTENSIONS  # here: beside the PIL code, needed only now

    if value.lower() in IMAGE_EXTENSIONS:
        return "is an image extension; captions need their own extension such as .txt"
    return None


_KV_RE = re.compile(r"^(\S+=\S+)( +\S+=\S+)*$")


def _check_kv_args(value: str) -> str | None:
    text = " ".join(value.split())
    if text and not _KV_RE.match(text):
        return 'must be space-separated key=value pairs, e.g. "relative_step=True scale_parameter=False"'
    return None


def parse_float_list(value: str) -> list[float]:
    return [float(v) for v in value.replace(" ", "").split(",") if v != ""]


def _check_float_list(value: str) -> str | None:
    if not value.strip():
        return None
    try:
        parse_float_list(value)
    except ValueError:
        return 'must be comma-separated numbers, e.g. "1,1,0.5"'
    return None


LR_WEIGHT_PRESETS = ("sine", "cosine", "linear", "reverse_linear", "zeros")


def _check_lr_weights(value: str) -> str | None:
    base = value.strip().split("+")[0].strip()
    if base in LR_WEIGHT_PRESETS:
        return None
    return _check_float_list(value)


def check_resolution(value: str) -> tuple[int, int]:
    """A ``resolution`` setting (``"512,512"``, ``"768x512"`` or ``"512"``) → (width, height), each 64–4096.

    Parsed by the one parser (:func:`patina.core.dataset.buckets.parse_resolution`, imported here only when
    needed: it lives beside the PIL code); this adds the range. Raises ValueError with a message."""
    from patina.core.dataset.buckets import parse_resolution

    try:
        w, h = parse_resolution(value)
    except ValueError:
        raise ValueError(f'"{value}" is not a resolution; write it as "W,H", e.g. "512,512"') from None
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        raise ValueError(f'resolution "{value}" is out of range; each side must be 64–4096')
    return w, h


# --- the schema ----------------------------------------------------------------------------------

def _check_weights(v: Any) -> str | None:
    parts = [x.strip() for x in str(v).split(",") if x.strip()]
    if not parts:
        return "needs at least one LoRA weight, e.g. 0,0.5,0.8,1.0"
    try:
        ws = [float(x) for x in parts]
    except ValueError:
        return "must be numbers separated by commas, e.g. 0,0.5,0.8,1.0"
    if any(not -4 <= w <= 4 for w in ws):
        return "weights must be between -4 and 4"
    return None


def P(key, type, default, label, help, page, section="", **kw) -> Param:  # noqa: N802 - table helper
    return Param(key=key, type=type, default=default, label=label, help=help, page=page, section=section, **kw)


PARAMS: tuple[Param, ...] = (
    # ---- Model --------------------------------------------------------------------------------
    P("pretrained_model_name_or_path", "path", "", "Pretrained model",
      "Base model to train on: a .safetensors checkpoint (A1111/ComfyUI style) or a diffusers folder.",
      "model", "Base model", path_kind="file_or_dir",
      file_filter="Stable Diffusion models (*.safetensors *.ckpt *.pt)", preset=False,
      required="the base model (a .safetensors checkpoint or a diffusers folder)", must_exist=True),
    P("model_family", "choice", "auto", "Model family",
      "SD 1.x, SD 2.x or SDXL. 'Detect from file' reads it from the checkpoint; override only if detection is wrong.",
      "model", "Base model", choices=FAMILIES, kohya=False, choice_labels=tuple(FAMILY_LABELS.items())),
    P("v_parameterization", "bool", False, "V-parameterization",
      "Tick for v-prediction models (SD 2.x 768-v and v-pred finetunes). Wrong setting gives noise or grey samples.",
      "model", "Base model"),
    P("train_data_dir", "path", "", "Image folder",
      "The folder that CONTAINS your concept folders named like '10_sks dog' (not the concept folder itself).",
      "model", "Dataset", path_kind="dir", preset=False, also_on=("folders",),
      required="the image folder (the one that contains your 10_name folders)", must_exist=True),
    P("output_name", "str", "my-lora", "Trained model output name",
      "File name of the LoRA, without extension: <name>.safetensors, <name>-000001.safetensors per epoch.",
      "model", "Output", preset=False,
      check=lambda v: "must not be empty or contain / \\ : * ? \" < > |" if (not v.strip() or re.search(r'[/\\:*?"<>|]', v)) else None),
    P("training_comment", "str", "", "Training comment",
      "Free text stored in the LoRA file's metadata (e.g. trigger words).", "model", "Output",
      ss_key="ss_training_comment"),
    P("save_precision", "choice", "fp16", "Save precision",
      "Precision of the saved LoRA weights. fp16 is what every UI expects; float doubles the file size.",
      "model", "Output", choices=("fp16", "bf16", "float")),

    # ---- Folders ------------------------------------------------------------------------------
    P("output_dir", "path", "", "Output folder",
      "Where the LoRA files, samples and training state are written.", "folders", "", path_kind="dir", preset=False,
      required="the output folder"),
    P("reg_data_dir", "path", "", "Regularisation folder",
      "Optional. Folder that contains regularisation concept folders named like '1_dog'.",
      "folders", "", path_kind="dir", preset=False, must_exist=True),
    P("logging_dir", "path", "", "Logging folder",
      "Optional. TensorBoard logs and a metrics.jsonl the app can re-read are written here.",
      "folders", "", path_kind="dir", preset=False),

    # ---- Metadata -----------------------------------------------------------------------------
    P("metadata_title", "str", "", "Title", "Shown by UIs that read modelspec metadata (defaults to the output name).",
      "metadata", "", preset=False),
    P("metadata_author", "str", "", "Author", "Your name or handle.", "metadata", ""),
    P("metadata_description", "text", "", "Description", "What the LoRA does and how to prompt it.", "metadata", "",
      preset=False),
    P("metadata_license", "str", "", "License", "E.g. CreativeML OpenRAIL-M.", "metadata", ""),
    P("metadata_tags", "str", "", "Tags", "Comma-separated tags.", "metadata", "", preset=False),

    # ---- Basic: network -----------------------------------------------------------------------
    P("LoRA_type", "choice", "Standard", "LoRA type",
      "Standard trains attention and projection layers. LoCon also trains the ResNet convolutions (more detail, bigger "
      "file). LyCORIS LoHa (Hadamard product) and LoKr (Kronecker product) train the same layers with other "
      "factorisations (LoKr files are small).",
      "basic", "Network", choices=LORA_TYPES),
    P("network_dim", "int", 8, "Network rank (dimension)",
      "Size of the LoRA. 8–32 suits most characters and styles; rank 16 ≈ 18 MB for SD 1.5. Up to 512; LoKr "
      "also takes 100000, LyCORIS's request for full (not low-rank) Kronecker factors.",
      "basic", "Network", min=1, max=LOKR_FULL_DIM, step=1),
    P("network_alpha", "float", 1.0, "Network alpha",
      "Scales the LoRA by alpha/rank. Lower alpha needs a higher learning rate. Common: 1, or half the rank.",
      "basic", "Network", min=0.00001, max=1024, step=1),
    P("conv_dim", "int", 1, "Convolution rank (dimension)", "Rank of the 3×3 convolution layers (LoCon, LoHa, LoKr).",
      "basic", "Network", min=1, max=LOKR_FULL_DIM, step=1, visible_if=_is_locon),
    P("conv_alpha", "float", 1.0, "Convolution alpha", "Alpha of the 3×3 convolution layers (LoCon, LoHa, LoKr).",
      "basic", "Network", min=0.00001, max=512, step=1, visible_if=_is_locon),
    P("factor", "int", -1, "LoKr factor",
      "How LoKr splits each layer's width into two Kronecker factors: -1 picks the factors nearest the square root "
      "(the usual choice); a positive number makes one factor that size where it divides the width.",
      "basic", "Network", min=-1, max=64, step=1, visible_if=_is_lokr),
    P("use_tucker", "bool", False, "Use Tucker decomposition",
      "LyCORIS's Tucker/CP decomposition of 3×3 convolutions. Patina does not train it; leave it off.",
      "basic", "Network", visible_if=_is_lycoris),
    P("decompose_both", "bool", False, "Decompose both factors",
      "LoKr: also split the first (smaller) Kronecker factor into two rank-sized matrices (a smaller file). No "
      "effect where the rank already covers the factor, as with rank 100000.",
      "basic", "Network", visible_if=_is_lokr),
    P("rank_dropout", "float", 0.0, "Rank dropout",
      "LoHa/LoKr: each step, drop this share of the update's rows (0.1 is common; 0 = off).",
      "basic", "Network", min=0, max=0.99, step=0.01, visible_if=_is_lycoris),
    P("rank_dropout_scale", "bool", False, "Rescale rank dropout",
      "LoKr: scale the rows kept by rank dropout up so the update keeps its size (LoHa always does).",
      "basic", "Network", visible_if=_is_lokr),
    P("module_dropout", "float", 0.0, "Module dropout",
      "LoHa/LoKr: each step, skip each adapted layer with this probability (0.1 is common; 0 = off).",
      "basic", "Network", min=0, max=0.99, step=0.01, visible_if=_is_lycoris),
    P("network_dropout", "float", 0.0, "Network dropout", "Dropout inside the LoRA layers (0.1–0.5 to fight overfitting).",
      "basic", "Network", min=0, max=1, step=0.01, ss_key="ss_network_dropout"),
    P("scale_weight_norms", "float", 0.0, "Scale weight norms",
      "Caps the norm of each LoRA module after every step (1 is a common value; 0 = off). Helps the LoRA combine with others.",
      "basic", "Network", min=0, max=10, step=0.01, ss_key="ss_scale_weight_norms"),
    P("network_weights", "path", "", "Network weights",
      "Optional. Continue training from an existing LoRA file.", "basic", "Network", path_kind="file",
      file_filter="LoRA files (*.safetensors)", preset=False, must_exist=True),
    P("dim_from_weights", "bool", False, "Rank from weights",
      "Take the rank from the network weights file instead of the rank field.", "basic", "Network"),

    # ---- Basic: learning rate -------------------------------------------------------------------
    P("learning_rate", "float", 0.0001, "Learning rate",
      "Base learning rate for the optimizer (adaptive optimizers such as Prodigy expect 1.0).",
      "basic", "Learning rate", min=0, max=10, step=0.00001, ss_key="ss_learning_rate"),
    P("unet_lr", "float", 0.0001, "UNet learning rate", "Learning rate of the UNet LoRA. 0 = do not train the UNet.",
      "basic", "Learning rate", min=0, max=10, step=0.00001, ss_key="ss_unet_lr"),
    P("text_encoder_lr", "float", 0.0001, "Text encoder learning rate",
      "Learning rate of the text encoder LoRA. 0 = UNet only (smaller file, often enough for styles).",
      "basic", "Learning rate", min=0, max=10, step=0.00001, ss_key="ss_text_encoder_lr"),
    P("loraplus_lr_ratio", "float", 0.0, "LoRA+ ratio",
      "LoRA+: the 'up' weights learn this many times faster (16 is a common start; 0 = off).",
      "basic", "Learning rate", min=0, max=128, step=1),
    P("loraplus_unet_lr_ratio", "float", 0.0, "LoRA+ UNet ratio", "LoRA+ ratio for the UNet only (0 = use LoRA+ ratio).",
      "basic", "Learning rate", min=0, max=128, step=1),
    P("loraplus_text_encoder_lr_ratio", "float", 0.0, "LoRA+ text encoder ratio",
      "LoRA+ ratio for the text encoder only (0 = use LoRA+ ratio).", "basic", "Learning rate", min=0, max=128, step=1),
    P("lr_scheduler", "choice", "cosine", "LR scheduler", "How the learning rate changes over the run.",
      "basic", "Learning rate", choices=LR_SCHEDULERS, ss_key="ss_lr_scheduler"),
    P("lr_warmup", "int", 10, "LR warmup (% of steps)", "Ramp the learning rate up over this share of the run.",
      "basic", "Learning rate", min=0, max=100, step=1, enabled_if=_has_warmup),
    P("lr_warmup_steps", "int", 0, "LR warmup steps", "Warmup in steps; wins over the percentage when above 0.",
      "basic", "Learning rate", min=0, max=1_000_000, step=1, enabled_if=_has_warmup, ss_key="ss_lr_warmup_steps"),
    P("lr_scheduler_num_cycles", "int", 1, "LR cycles", "Number of restarts for cosine_with_restarts.",
      "basic", "Learning rate", min=1, max=1000, step=1,
      visible_if=lambda c: c.get("lr_scheduler") == "cosine_with_restarts"),
    P("lr_scheduler_power", "float", 1.0, "LR power", "Power of the polynomial decay.",
      "basic", "Learning rate", min=0, max=100, step=0.1, visible_if=lambda c: c.get("lr_scheduler") == "polynomial"),
    P("lr_scheduler_args", "str", "", "LR scheduler extra arguments", "key=value pairs passed to the scheduler.",
      "basic", "Learning rate", check=_check_kv_args, placeholder="key=value key=value"),

    # ---- Basic: optimizer ---------------------------------------------------------------------
    P("optimizer", "choice", "AdamW8bit", "Optimizer",
      "AdamW8bit saves memory (needs bitsandbytes and an NVIDIA GPU); AdamW works everywhere; Prodigy/DAdaptation pick the LR themselves.",
      "basic", "Optimizer", choices=OPTIMIZERS),
    P("optimizer_args", "str", "", "Optimizer extra arguments",
      'key=value pairs, e.g. "weight_decay=0.01 betas=0.9,0.99".', "basic", "Optimizer", check=_check_kv_args,
      placeholder="key=value key=value"),
    P("max_grad_norm", "float", 1.0, "Max grad norm", "Clip gradients to this norm (0 = off).",
      "basic", "Optimizer", min=0, max=1000, step=0.1, ss_key="ss_max_grad_norm"),

    # ---- Basic: training length ---------------------------------------------------------------
    P("train_batch_size", "int", 1, "Train batch size", "Images per step. Higher is faster per image but needs more VRAM.",
      "basic", "Training length", min=1, max=64, step=1, ss_key="ss_batch_size_per_device"),
    P("epoch", "int", 1, "Epochs", "Passes over the dataset (each image × its repeats).",
      "basic", "Training length", min=1, max=10000, step=1),
    P("max_train_epochs", "int", 0, "Max train epochs", "Overrides Epochs and Max train steps when above 0.",
      "basic", "Training length", min=0, max=10000, step=1),
    P("max_train_steps", "int", 0, "Max train steps",
      "Stop after this many steps (0 = computed from epochs). Ignored when Max train epochs is set.",
      "basic", "Training length", min=0, max=10_000_000, step=1, ss_key="ss_max_train_steps"),
    P("save_every_n_epochs", "int", 1, "Save every N epochs", "Write <name>-<epoch>.safetensors every N epochs (0 = only at the end).",
      "basic", "Training length", min=0, max=10000, step=1),
    P("seed", "int", 0, "Seed", "Same seed + same settings = same result. 0 picks a random seed (saved in the file).",
      "basic", "Training length", min=0, max=2**32 - 1, step=1, ss_key="ss_seed"),

    # ---- Basic: data ----------------------------------------------------------------------------
    P("caption_extension", "str", ".txt", "Caption file extension",
      "Captions are read from <image name><extension> next to each image; images without one are captioned with "
      "their folder name (an extension no file has, such as .none-use-foldername, captions every image that way).",
      "basic", "Data", choices=CAPTION_EXTENSION_SUGGESTIONS, check=check_caption_extension, placeholder=".txt"),
    P("max_resolution", "resolution", "512,512", "Max resolution",
      "Training resolution W,H: 512,512 for SD 1.5, 768,768 for SD 2.x-768, 1024,1024 for SDXL.", "basic", "Data",
      placeholder="W,H  e.g. 512,512"),
    P("enable_bucket", "bool", True, "Enable buckets",
      "Train each image at the aspect ratio closest to its own instead of cropping everything square.", "basic", "Data",
      ss_key="ss_enable_bucket"),
    P("min_bucket_reso", "int", 256, "Minimum bucket resolution", "Smallest side a bucket may have.",
      "basic", "Data", min=64, max=4096, step=64, enabled_if=lambda c: bool(c.get("enable_bucket")),
      ss_key="ss_min_bucket_reso"),
    P("max_bucket_reso", "int", 2048, "Maximum bucket resolution", "Largest side a bucket may have.",
      "basic", "Data", min=64, max=4096, step=64, enabled_if=lambda c: bool(c.get("enable_bucket")),
      ss_key="ss_max_bucket_reso"),
    P("cache_latents", "bool", True, "Cache latents",
      "Encode every image once with the VAE before training; faster and frees the VAE from VRAM.", "basic", "Data",
      ss_key="ss_cache_latents"),
    P("cache_latents_to_disk", "bool", False, "Cache latents to disk",
      "Keep the cache on disk next to the images so the next run starts faster (the images are never changed).",
      "basic", "Data", enabled_if=lambda c: bool(c.get("cache_latents"))),

    # ---- Basic: precision / SDXL --------------------------------------------------------------
    P("mixed_precision", "choice", "fp16", "Mixed precision",
      "fp16 for GeForce 10/20 series, bf16 for RTX 30/40/50; 'no' trains in full precision (slow, for CPU).",
      "basic", "Precision", choices=("no", "fp16", "bf16"), ss_key="ss_mixed_precision"),
    P("sdxl_no_half_vae", "bool", False, "No half VAE (SDXL)",
      "Run the SDXL VAE in full precision; avoids NaN latents and black samples with the original SDXL VAE.",
      "basic", "Precision", visible_if=_is_sdxl),

    # ---- Advanced: memory & speed ---------------------------------------------------------------
    P("gradient_checkpointing", "bool", False, "Gradient checkpointing",
      "Saves a lot of VRAM for about 20–30% more time per step. Turn on for SDXL on 12 GB or less.",
      "advanced", "Memory and speed", ss_key="ss_gradient_checkpointing"),
    P("gradient_accumulation_steps", "int", 1, "Gradient accumulation steps",
      "Add up gradients over N steps before updating: a bigger effective batch without more VRAM.",
      "advanced", "Memory and speed", min=1, max=120, step=1, ss_key="ss_gradient_accumulation_steps"),
    P("xformers", "choice", "sdpa", "Cross attention",
      "sdpa is PyTorch's built-in memory-efficient attention; xformers needs the xformers package.",
      "advanced", "Memory and speed", choices=("sdpa", "xformers", "none")),
    P("vae", "path", "", "VAE", "Optional separate VAE file used for caching latents and samples.",
      "advanced", "Memory and speed", path_kind="file", file_filter="VAE files (*.safetensors *.pt *.ckpt)", preset=False,
      must_exist=True, ss_key="ss_vae_name"),
    P("vae_batch_size", "int", 0, "VAE batch size", "Images encoded at once while caching latents (0 = one batch).",
      "advanced", "Memory and speed", min=0, max=32, step=1),
    P("cpu_threads", "int", 0, "CPU threads",
      "Threads for training on the CPU (no CUDA GPU). 0 = automatic: OMP_NUM_THREADS when set, else the physical "
      "cores less one for the window, at most 16. Ignored on a GPU.",
      "advanced", "Memory and speed", min=0, max=256, step=1, kohya=False, preset=False),

    # ---- Advanced: captions ---------------------------------------------------------------------
    P("shuffle_caption", "bool", False, "Shuffle caption", "Shuffle comma-separated tags every step.",
      "advanced", "Captions", ss_key="ss_shuffle_caption"),
    P("keep_tokens", "int", 0, "Keep n tokens", "The first N comma-separated tags stay in place when shuffling or dropping.",
      "advanced", "Captions", min=0, max=32, step=1, ss_key="ss_keep_tokens"),
    P("caption_dropout_rate", "float", 0.0, "Caption dropout rate", "Share of steps trained with an empty caption.",
      "advanced", "Captions", min=0, max=1, step=0.01, ss_key="ss_caption_dropout_rate"),
    P("caption_dropout_every_n_epochs", "int", 0, "Drop captions every N epochs",
      "Train every Nth epoch without captions (0 = never).", "advanced", "Captions", min=0, max=10000, step=1,
      ss_key="ss_caption_dropout_every_n_epochs"),
    P("caption_tag_dropout_rate", "float", 0.0, "Tag dropout rate",
      "Chance of dropping each (non-kept) tag at each step.", "advanced", "Captions", min=0, max=1, step=0.01,
      ss_key="ss_caption_tag_dropout_rate"),
    P("clip_skip", "int", 1, "Clip skip", "Use the output of the Nth-last text encoder layer (2 for anime models).",
      "advanced", "Captions", min=1, max=12, step=1, ss_key="ss_clip_skip"),
    P("max_token_length", "choice", 75, "Max token length", "Longer captions are cut at this many tokens.",
      "advanced", "Captions", choices=(75, 150, 225), ss_key="ss_max_token_length"),

    # ---- Advanced: augmentation & buckets -------------------------------------------------------
    P("flip_aug", "bool", False, "Flip augmentation", "Also train on mirrored images (not for asymmetric subjects or text).",
      "advanced", "Augmentation and buckets", ss_key="ss_flip_aug"),
    P("color_aug", "bool", False, "Color augmentation",
      "Randomly shift hue and saturation. Latents cannot be cached with it (caching is skipped).",
      "advanced", "Augmentation and buckets", ss_key="ss_color_aug"),
    P("random_crop", "bool", False, "Random crop", "Crop at a random position instead of the centre (caching is skipped).",
      "advanced", "Augmentation and buckets", ss_key="ss_random_crop"),
    P("bucket_no_upscale", "bool", True, "Don't upscale bucket resolution",
      "Small images get a smaller bucket instead of being enlarged.", "advanced", "Augmentation and buckets",
      ss_key="ss_bucket_no_upscale"),
    # The smallest step is 8: the VAE turns every 8×8 pixels into one latent, so a side that is not a multiple
    # of 8 loses its last pixels in the latent (and the latent no longer decodes to the bucket's size). The
    # UNet's three downsamplings of the latent would like 64-pixel multiples, but its upsamplers follow the skip
    # connections' sizes, so any multiple of 8 trains (sd-scripts enforces nothing for SD1/SDXL either).
    P("bucket_reso_steps", "int", 64, "Bucket resolution steps",
      "Bucket sides are multiples of this (a multiple of 8: the VAE works on 8×8 pixel blocks).",
      "advanced", "Augmentation and buckets", min=BUCKET_STEP_MIN, max=128, step=8,
      check=lambda v: None if v % BUCKET_STEP_MIN == 0 else f"must be a multiple of {BUCKET_STEP_MIN}"),

    # ---- Advanced: loss -------------------------------------------------------------------------
    P("prior_loss_weight", "float", 1.0, "Prior loss weight", "Weight of the regularisation images' loss.",
      "advanced", "Loss", min=0, max=10, step=0.1, ss_key="ss_prior_loss_weight"),
    P("min_snr_gamma", "float", 0.0, "Min SNR gamma", "Balances the loss over noise levels; 5 is a good value (0 = off).",
      "advanced", "Loss", min=0, max=20, step=1, ss_key="ss_min_snr_gamma"),
    P("debiased_estimation_loss", "bool", False, "Debiased estimation loss",
      "Weight the loss by 1/sqrt(SNR). Do not combine with Min SNR gamma.", "advanced", "Loss",
      ss_key="ss_debiased_estimation"),
    P("scale_v_pred_loss_like_noise_pred", "bool", False, "Scale v-prediction loss",
      "Scale the v-prediction loss like noise prediction (v-prediction models only).", "advanced", "Loss",
      visible_if=lambda c: bool(c.get("v_parameterization"))),
    P("v_pred_like_loss", "float", 0.0, "V-pred-like loss", "Adds a v-prediction-like loss term (0.5 suggested; 0 = off).",
      "advanced", "Loss", min=0, max=1, step=0.01),
    P("loss_type", "choice", "l2", "Loss type", "l2 is the standard; huber/smooth_l1 are more robust to outliers.",
      "advanced", "Loss", choices=("l2", "l1", "huber", "smooth_l1"), ss_key="ss_loss_type"),
    P("huber_schedule", "choice", "snr", "Huber schedule", "How the Huber parameter changes with the timestep.",
      "advanced", "Loss", choices=("snr", "exponential", "constant"), visible_if=_huber, ss_key="ss_huber_schedule"),
    P("huber_c", "float", 0.1, "Huber C", "Huber loss parameter.", "advanced", "Loss", min=0, max=1, step=0.01,
      visible_if=_huber, ss_key="ss_huber_c"),
    P("huber_scale", "float", 1.0, "Huber scale", "Huber loss scale.", "advanced", "Loss", min=0, max=10, step=0.1,
      visible_if=_huber, ss_key="ss_huber_scale"),

    # ---- Advanced: noise & timesteps ------------------------------------------------------------
    P("noise_offset_type", "choice", "Original", "Noise offset type", "Original offset or multi-resolution noise.",
      "advanced", "Noise", choices=("Original", "Multires")),
    P("noise_offset", "float", 0.0, "Noise offset", "Helps very dark/bright images (0.05–0.1; 0 = off).",
      "advanced", "Noise", min=0, max=1, step=0.01, visible_if=_noise_original, ss_key="ss_noise_offset"),
    P("noise_offset_random_strength", "bool", False, "Random noise offset strength",
      "Use a random offset between 0 and the noise offset.", "advanced", "Noise", visible_if=_noise_original,
      ss_key="ss_noise_offset_random_strength"),
    P("adaptive_noise_scale", "float", 0.0, "Adaptive noise scale", "Adds the latent mean × this to the noise offset.",
      "advanced", "Noise", min=-1, max=1, step=0.001, visible_if=_noise_original, ss_key="ss_adaptive_noise_scale"),
    P("multires_noise_iterations", "int", 0, "Multires noise iterations", "6–10 is typical (0 = off).",
      "advanced", "Noise", min=0, max=64, step=1, visible_if=_noise_multires, ss_key="ss_multires_noise_iterations"),
    P("multires_noise_discount", "float", 0.3, "Multires noise discount", "0.1–0.3 for small datasets.",
      "advanced", "Noise", min=0, max=1, step=0.01, visible_if=_noise_multires, ss_key="ss_multires_noise_discount"),
    P("ip_noise_gamma", "float", 0.0, "Input perturbation noise gamma", "About 0.1 (0 = off).",
      "advanced", "Noise", min=0, max=1, step=0.01, ss_key="ss_ip_noise_gamma"),
    P("ip_noise_gamma_random_strength", "bool", False, "Random IP noise strength",
      "Use a random strength between 0 and the gamma.", "advanced", "Noise",
      ss_key="ss_ip_noise_gamma_random_strength"),
    P("min_timestep", "int", 0, "Min timestep", "Lowest noise timestep trained.", "advanced", "Noise",
      min=0, max=1000, step=1),
    P("max_timestep", "int", 1000, "Max timestep", "Highest noise timestep trained (exclusive).", "advanced", "Noise",
      min=1, max=1000, step=1),

    # ---- Advanced: saving -----------------------------------------------------------------------
    P("save_every_n_steps", "int", 0, "Save every N steps", "Also write <name>-step<N>.safetensors every N steps (0 = off).",
      "advanced", "Saving", min=0, max=10_000_000, step=1),
    P("save_last_n_steps", "int", 0, "Keep last N steps", "Delete step checkpoints older than N steps (0 = keep all).",
      "advanced", "Saving", min=0, max=10_000_000, step=1),
    P("save_last_n_steps_state", "int", 0, "Keep last N steps (state)", "Same for saved training states.",
      "advanced", "Saving", min=0, max=10_000_000, step=1),
    P("save_last_n_epochs", "int", 0, "Keep last N epochs", "Keep only the newest N epoch checkpoints (0 = keep all).",
      "advanced", "Saving", min=0, max=10000, step=1),
    P("save_last_n_epochs_state", "int", 0, "Keep last N epochs (state)", "Same for saved training states.",
      "advanced", "Saving", min=0, max=10000, step=1),
    P("save_state", "bool", False, "Save training state",
      "Write a resumable <name>-state folder (optimizer, scheduler, RNG) with each checkpoint.", "advanced", "Saving"),
    P("save_state_on_train_end", "bool", False, "Save training state at the end",
      "Write <name>-state when training ends so it can be continued later.", "advanced", "Saving"),
    P("resume", "path", "", "Resume from state", "A <name>-state folder to continue from.", "advanced", "Saving",
      path_kind="dir", preset=False, must_exist=True),

    # ---- Advanced: block weights ----------------------------------------------------------------
    P("down_lr_weight", "str", "", "Down LR weights",
      "LR multipliers for the UNet down blocks, one per block (12 for SD 1.x/2.x), or sine/cosine/linear/reverse_linear/zeros.",
      "advanced", "Block weights", check=_check_lr_weights),
    P("mid_lr_weight", "str", "", "Mid LR weight", "LR multiplier for the UNet middle block, e.g. 0.5.",
      "advanced", "Block weights", check=_check_float_list),
    P("up_lr_weight", "str", "", "Up LR weights", "LR multipliers for the UNet up blocks (same count as down).",
      "advanced", "Block weights", check=_check_lr_weights),
    P("block_lr_zero_threshold", "float", 0.0, "Block LR zero threshold",
      "Blocks whose LR weight is at or below this get no LoRA modules.", "advanced", "Block weights",
      min=0, max=1, step=0.01),
    P("block_dims", "str", "", "Block dims", "Rank per block: 25 numbers for SD 1.x/2.x, 23 for SDXL.",
      "advanced", "Block weights", check=_check_float_list),
    P("block_alphas", "str", "", "Block alphas", "Alpha per block, same count as block dims.",
      "advanced", "Block weights", check=_check_float_list),
    P("conv_block_dims", "str", "", "Conv block dims", "LoCon rank per block, same count as block dims.",
      "advanced", "Block weights", check=_check_float_list, visible_if=_is_locon),
    P("conv_block_alphas", "str", "", "Conv block alphas", "LoCon alpha per block.",
      "advanced", "Block weights", check=_check_float_list, visible_if=_is_locon),

    # ---- Samples --------------------------------------------------------------------------------
    P("sample_every_n_steps", "int", 0, "Sample every N steps", "Generate the sample prompts every N steps (0 = off).",
      "samples", "", min=0, max=10_000_000, step=1),
    P("sample_every_n_epochs", "int", 0, "Sample every N epochs",
      "Generate the sample prompts every N epochs (0 = off). Both settings are honoured together.",
      "samples", "", min=0, max=10000, step=1),
    P("sample_at_first", "bool", False, "Sample before training", "Generate samples before the first step, as a baseline.",
      "samples", "", kohya=False),
    P("sample_sampler", "choice", "euler_a", "Sampler", "Sampler used for the samples (a prompt can override it with --ss).",
      "samples", "", choices=SAMPLERS, choice_labels=_SAMPLER_CHOICE_LABELS),
    P("sample_prompts", "text", "", "Sample prompts",
      "One prompt per line. Options: --n negative --w width --h height --d seed --s steps --l CFG scale.",
      "samples", "", preset=False,
      placeholder="a photo of sks dog on a beach --n blurry, lowres --w 512 --h 512 --d 1 --s 28 --l 7"),

    # ---- Quality report (Samples page) -----------------------------------------------------------
    P("quality_report", "bool", True, "Quality report every epoch",
      "After every epoch, sample fixed prompts and seeds at several LoRA weights and measure how far trigger and "
      "class prompts moved from the base model, plus a validation loss (quality.json, Monitor tab).",
      "samples", "Quality report", kohya=False),
    P("quality_prompts", "text", "", "Report prompts",
      "One prompt per line (sample-prompt syntax). Lines with your trigger word are trigger prompts, the others "
      "class prompts. Empty: your sample prompts, or '<trigger> <class>' from the folder names.",
      "samples", "Quality report", kohya=False, preset=False,
      placeholder="a photo of sks dog --d 1 --s 20\na photo of a dog --d 1 --s 20"),
    P("quality_seeds", "int", 2, "Seeds per prompt",
      "Images per prompt and LoRA weight (seeds d, d+1, …); more gives steadier numbers and takes longer.",
      "samples", "Quality report", kohya=False, min=1, max=64, step=1),
    P("quality_weights", "str", "0,0.5,0.8,1.0", "LoRA weights",
      "LoRA weights the report samples at, comma-separated; 0 is the base model (sampled once).",
      "samples", "Quality report", kohya=False, check=_check_weights),
    P("validation_split", "float", 0.0, "Validation split",
      "Share of the training images held out of training to measure a validation loss (0 = measure it on fixed "
      "noise over the training images).", "samples", "Quality report", min=0.0, max=0.5, step=0.05),
    P("validation_seed", "int", 0, "Validation seed",
      "Seed that picks the held-out images and their fixed noise (0 = the run's seed).",
      "samples", "Quality report", min=0, max=2**31 - 1, step=1),
)

BY_KEY: dict[str, Param] = {p.key: p for p in PARAMS}
assert len(BY_KEY) == len(PARAMS), "duplicate parameter key"

# Facts read from the table above (declared there, per parameter).
REQUIRED_TO_START: tuple[str, ...] = tuple(p.key for p in PARAMS if p.required)
INPUT_PATHS: tuple[str, ...] = tuple(p.key for p in PARAMS if p.must_exist)
SS_KEYS: dict[str, str] = {p.key: p.ss_key for p in PARAMS if p.ss_key}


def missing_required(cfg: Mapping[str, Any]) -> list[Param]:
    """The parameters that must be set to train and are still empty in *cfg*."""
    return [BY_KEY[k] for k in REQUIRED_TO_START if not str(cfg.get(k) or "").strip()]


def missing_inputs(cfg: Mapping[str, Any]) -> list[Problem]:
    """A warning for each input path that is set but does not exist (the run's plan makes it an error)."""
    out = []
    for key in INPUT_PATHS:
        text = str(cfg.get(key) or "").strip()
        if text and not os.path.exists(os.path.expanduser(text)):
            what = "folder" if BY_KEY[key].path_kind == "dir" else "file or folder"
            out.append(Problem(key, f"no such {what}; check the path or choose it with Browse…", None, "warning"))
    return out


def defaults() -> dict[str, Any]:
    """A fresh config holding every parameter's default."""
    return {p.key: p.default for p in PARAMS}


def params_on_page(page: str) -> list[Param]:
    return [p for p in PARAMS if p.page == page]


def mirrored_on(page: str) -> list[Param]:
    """Parameters that live on another page and are also shown on *page* (kohya_ss had the image folder on
    Folders before moving it to Model; users look in both places)."""
    return [p for p in PARAMS if page in p.also_on]


def sections(page: str) -> list[tuple[str, list[Param]]]:
    """The page's parameters grouped by section, in declaration order."""
    out: dict[str, list[Param]] = {}
    for p in params_on_page(page):
        out.setdefault(p.section, []).append(p)
    return list(out.items())


# --- value coercion and validation ----------------------------------------------------------------

@dataclass
class Problem:
    """One problem with one field (or with the combination of fields, then ``key`` names the first)."""

    key: str
    message: str
    value: Any = None
    severity: str = "error"  # "error" | "warning"
    fix: dict | None = None  # {key: value} that solves it (offered as a one-click fix / ``--set``)

    def __str__(self) -> str:
        where = f"{self.key}"
        if self.value is not None and self.value != "":
            where += f" = {self.value!r}"
        return f"{where}: {self.message}"


class ValueProblem(ValueError):
    pass


def coerce(param: Param, value: Any) -> Any:
    """Check *value* (a JSON value) against *param* and return it in canonical form.

    Raises :class:`ValueProblem` with a message saying what is allowed. Strict about types: a string
    is not a number here (the kohya importer and :func:`parse_text` convert text first)."""
    t = param.type
    if t == "bool":
        if isinstance(value, bool):
            return value
        raise ValueProblem(f"must be {param.allowed()}")
    if t in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueProblem(f"must be {param.allowed()}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueProblem(f"must be {param.allowed()}")
        if t == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueProblem(f"must be {param.allowed()}")
                value = int(value)
        else:
            value = float(value)
        if (param.min is not None and value < param.min) or (param.max is not None and value > param.max):
            raise ValueProblem(f"is out of range; must be {param.allowed()}")
    elif t == "choice":
        for c in param.choices:
            if value == c and type(value) is type(c):
                return c
        # tolerate 150 vs "150" and case differences for string choices
        for c in param.choices:
            if isinstance(c, int) and isinstance(value, str) and value.strip() == str(c):
                return c
            if isinstance(c, str) and isinstance(value, str) and value.strip().lower() == c.lower():
                return c
        raise ValueProblem(f"must be {param.allowed()}")
    elif t in ("str", "text", "path"):
        if not isinstance(value, str):
            raise ValueProblem("must be text")
        value = value if t == "text" else value.strip()
    elif t == "resolution":
        if not isinstance(value, str):
            raise ValueProblem(f"must be {param.allowed()}")
        try:
            w, h = check_resolution(value)
        except ValueError as exc:
            raise ValueProblem(str(exc)) from None
        value = f"{w},{h}"
    else:  # pragma: no cover - schema error
        raise AssertionError(f"unknown type {t}")
    if param.check:
        msg = param.check(value)
        if msg:
            raise ValueProblem(msg)
    return value


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def parse_text(param: Param, text: str) -> Any:
    """Convert text typed by a person (``--set key=value``, a kohya string number) into a value of
    the parameter's type, then :func:`coerce` it."""
    s = text.strip()
    t = param.type
    if t == "bool":
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise ValueProblem(f"must be {param.allowed()}")
    if t in ("int", "float"):
        try:
            num = float(s)
        except ValueError:
            raise ValueProblem(f"must be {param.allowed()}") from None
        if t == "int":
            if not num.is_integer():
                raise ValueProblem(f"must be {param.allowed()}")
            return coerce(param, int(num))
        return coerce(param, num)
    if t == "choice" and param.choices and isinstance(param.choices[0], int):
        try:
            return coerce(param, int(s))
        except ValueError:
            raise ValueProblem(f"must be {param.allowed()}") from None
    return coerce(param, text if t == "text" else s)


class ValidConfig(dict):
    """A complete config in which :func:`check_values` found no error. Code that needs a valid config takes
    one of these as it is, so that one run validates its settings once."""


def check_values(values: Mapping[str, Any], *, inputs: bool = False) -> tuple[dict[str, Any], list[Problem]]:
    """The one validator: coerce every known key of *values* over the defaults.

    Returns the complete config (invalid fields keep their default; a :class:`ValidConfig` when there is no
    error) and the list of problems, field problems first, then cross-field problems, then (with *inputs*)
    a warning for each input path that does not exist. Unknown keys are ignored here (callers report
    them)."""
    cfg = defaults()
    problems: list[Problem] = []
    for key, raw in values.items():
        param = BY_KEY.get(key)
        if param is None:
            continue
        try:
            cfg[key] = coerce(param, raw)
        except ValueProblem as exc:
            problems.append(Problem(key, str(exc), raw))
    problems.extend(cross_check(cfg))
    if inputs:
        problems.extend(missing_inputs(values))
    return (cfg if errors(problems) else ValidConfig(cfg)), problems


def cross_check(cfg: Mapping[str, Any]) -> list[Problem]:
    """Problems that involve more than one field."""
    out: list[Problem] = []
    if cfg["use_tucker"] and _is_lycoris(cfg):
        out.append(Problem("use_tucker", "Tucker/CP decomposition is not supported for LoHa/LoKr in Patina; untick "
                           "it (the files are then the plain LyCORIS layout every loader reads)", True))
    if not _is_lokr(cfg):
        for key in ("network_dim", "conv_dim"):
            if cfg[key] > MAX_RANK and (key == "network_dim" or _is_locon(cfg)):
                out.append(Problem(key, f"is above {MAX_RANK}; only LoKr takes larger values (full Kronecker "
                                   f"factors); use 1–{MAX_RANK}", cfg[key]))
    if cfg["factor"] == 0 and _is_lokr(cfg):
        out.append(Problem("factor", "0 is not a LoKr factor; use -1 (automatic) or a positive number", 0))
    if cfg["network_dropout"] > 0 and _is_lycoris(cfg):
        out.append(Problem("network_dropout", f"is not available for {cfg['LoRA_type']} in Patina; set it to 0",
                           cfg["network_dropout"]))
    for key in ("rank_dropout", "module_dropout"):
        if cfg[key] > 0 and not _is_lycoris(cfg):
            out.append(Problem(key, f"is available for LoHa and LoKr in Patina, not {cfg['LoRA_type']}; set it to "
                               "0 or use network_dropout", cfg[key]))
    if cfg["unet_lr"] == 0 and cfg["text_encoder_lr"] == 0:
        out.append(Problem("unet_lr", "nothing to train: both the UNet and the text encoder learning rates are 0; "
                           "set at least one above 0"))
    if cfg["min_bucket_reso"] > cfg["max_bucket_reso"]:
        out.append(Problem("min_bucket_reso", f"is larger than max_bucket_reso ({cfg['max_bucket_reso']})",
                           cfg["min_bucket_reso"]))
    if cfg["min_timestep"] >= cfg["max_timestep"]:
        out.append(Problem("min_timestep", f"must be below max_timestep ({cfg['max_timestep']})", cfg["min_timestep"]))
    if cfg["min_snr_gamma"] > 0 and cfg["debiased_estimation_loss"]:
        out.append(Problem("debiased_estimation_loss", "do not combine with min_snr_gamma; use one of the two",
                           True, "warning"))
    if cfg["cache_latents"] and (cfg["color_aug"] or cfg["random_crop"]):
        which = "color_aug" if cfg["color_aug"] else "random_crop"
        out.append(Problem(which, "changes the image every step, so latents will not be cached (slower)", True,
                           "warning"))
    sampling = cfg["sample_every_n_steps"] or cfg["sample_every_n_epochs"] or cfg["sample_at_first"]
    prompts = [ln for ln in str(cfg["sample_prompts"] or "").splitlines()
               if ln.strip() and not ln.lstrip().startswith("#")]
    if sampling and not prompts:
        out.append(Problem("sample_prompts", "sampling is on but there are no sample prompts, so no samples will be "
                           "made; write one prompt per line, or set the sample intervals to 0", "", "warning"))
    if cfg["model_family"] == "sdxl" and cfg["v_parameterization"]:
        pass  # v-pred SDXL finetunes exist; allowed
    if cfg["mixed_precision"] == "fp16" and cfg["model_family"] == "sdxl" and not cfg["sdxl_no_half_vae"]:
        out.append(Problem("sdxl_no_half_vae", "the original SDXL VAE produces NaNs in fp16; tick 'No half VAE' "
                           "unless your model ships the fp16-fixed VAE", False, "warning"))
    return out


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def non_default(cfg: Mapping[str, Any], *, preset_only: bool = False) -> dict[str, Any]:
    """The keys whose value differs from the default (optionally only keys that belong in presets)."""
    out = {}
    for p in PARAMS:
        if preset_only and not p.preset:
            continue
        if p.key in cfg and cfg[p.key] != p.default:
            out[p.key] = cfg[p.key]
    return out


@dataclass
class TrainingLR:
    """Which parts train, following kohya: a learning rate of 0 means that part is not trained."""

    unet: float
    text_encoder: float
    train_unet: bool = field(init=False)
    train_text_encoder: bool = field(init=False)

    def __post_init__(self):
        self.train_unet = self.unet > 0
        self.train_text_encoder = self.text_encoder > 0


def training_lrs(cfg: Mapping[str, Any]) -> TrainingLR:
    return TrainingLR(unet=float(cfg["unet_lr"]), text_encoder=float(cfg["text_encoder_lr"]))
