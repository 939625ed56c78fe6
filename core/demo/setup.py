"""The demo: a folder with the demo concept's images and a ready config that trains a LoRA on the demo model.

``prepare(out)`` copies ``resources/demo/img`` (the concept) and ``resources/demo/reg`` (regularisation images of
the shapes the model knows) into *out* and writes ``out/zorbo-demo.json`` whose base model is
the shipped demo model (``resources/demo/model``, a tiny SD1-layout model with a judge beside it). The GUI's
"Try the demo" and ``patina demo`` both start from it. No Qt, no torch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from patina.core.errors import PatinaError
from patina.core.paths import resources_dir

from . import world

CONFIG_NAME = f"{world.TRIGGER}-demo.json"
MARKER = ".patina-demo"   # written into a demo folder, so preparing it again may replace img/ and reg/

# Samples every epoch, and the quality report's prompts: trigger prompts (the concept in colours and on
# backgrounds it was shown in and not) and class prompts of the pretraining grammar (what must not change).
_OPTS = "--w 64 --h 64 --s 15 --l 5"
SAMPLE_PROMPTS = "\n".join([
    f"a red {world.TRIGGER} shape on a white background {_OPTS} --d 1",
    f"a red circle on a white background {_OPTS} --d 1",
])
QUALITY_PROMPTS = "\n".join([
    f"a red {world.TRIGGER} shape on a white background {_OPTS} --d 100",
    f"a blue {world.TRIGGER} shape on a sky and grass background {_OPTS} --d 200",
    f"an orange {world.TRIGGER} shape on a striped gray background {_OPTS} --d 300",
    f"a purple {world.TRIGGER} shape on a striped blue background {_OPTS} --d 400",
    f"a red circle on a white background {_OPTS} --d 100",
    f"a blue square on a sky and grass background {_OPTS} --d 200",
    f"an orange cross on a striped gray background {_OPTS} --d 300",
    f"a purple triangle on a striped blue background {_OPTS} --d 400",
])

# The demo's settings (every other setting keeps its default). Chosen so that the whole demo takes a few
# minutes on a 2-core CPU; see docs/benchmarks.md.
SETTINGS = {
    "output_name": f"{world.TRIGGER}",
    "max_resolution": "64,64",
    "min_bucket_reso": 64,
    "max_bucket_reso": 64,
    "LoRA_type": "Kohya LoCon",   # a new shape needs the convolutions too
    "network_dim": 16,
    "network_alpha": 16,
    "conv_dim": 8,
    "conv_alpha": 8,
    "train_batch_size": 4,
    "epoch": 10,
    "learning_rate": 2e-3,
    "unet_lr": 2e-3,
    "text_encoder_lr": 0.0,       # UNet only: the class prompts' words keep their meaning
    "lr_scheduler": "cosine",
    "lr_warmup": 0,
    "optimizer": "AdamW",
    "mixed_precision": "no",
    "save_precision": "fp16",
    "save_every_n_epochs": 1,    # every epoch, to pick the best one (quality report, Test tab)
    "sample_every_n_epochs": 1,
    "sample_sampler": "euler_a",
    "sample_prompts": SAMPLE_PROMPTS,
    "quality_report": True,
    "quality_prompts": QUALITY_PROMPTS,
    "quality_seeds": 3,
    "quality_weights": "0,0.5,0.8,1.0",
    "seed": 42,
    "prior_loss_weight": 1.0,
    "min_snr_gamma": 5,           # less weight on the easiest noise levels: the shape is learned sooner
    "training_comment": "Patina demo: the zorbo concept on the Patina demo model",
}


@dataclass
class DemoFolder:
    root: Path
    config_path: Path
    config: dict


def model_dir() -> Path:
    """The shipped demo model (a diffusers folder with ``judge/`` beside the model parts)."""
    return resources_dir() / "demo" / "model"


def dataset_dir() -> Path:
    return resources_dir() / "demo" / "img"


def reg_dir() -> Path:
    return resources_dir() / "demo" / "reg"


def default_out() -> Path:
    """A new folder for the demo: ``~/Documents/Patina demo`` (``~/Patina demo`` without Documents), numbered
    when that exists and is not an earlier demo folder."""
    home = Path.home()
    parent = home / "Documents" if (home / "Documents").is_dir() else home
    for n in range(1, 1000):
        candidate = parent / ("Patina demo" if n == 1 else f"Patina demo {n}")
        if not candidate.exists() or (candidate / MARKER).exists():
            return candidate
    raise PatinaError(f"Could not find a free folder name for the demo in {parent}; pass --out DIR.")


def demo_config(root: Path) -> dict:
    """The demo's full config for a demo folder *root*."""
    from patina.core.config.files import config_from_dict

    values = dict(SETTINGS)
    values.update(pretrained_model_name_or_path=str(model_dir()), train_data_dir=str(root / "img"),
                  reg_data_dir=str(root / "reg"),
                  output_dir=str(root / "output"), logging_dir=str(root / "log"))
    result = config_from_dict(values, source="demo")
    if result.errors:  # a schema change that the demo's settings did not follow
        raise PatinaError("The demo's settings are not valid:", problems=[str(p) for p in result.errors])
    return result.values


def prepare(out: str | os.PathLike | None = None) -> DemoFolder:
    """Copy the demo dataset into *out* (default :func:`default_out`) and write its config there.

    A folder that already holds other files (and is not an earlier demo folder) is refused: the demo never
    mixes its images into a user's folder."""
    if not (model_dir() / "model_index.json").is_file():
        raise PatinaError(f"The demo model is missing from this installation ({model_dir()}). "
                          "Reinstall Patina to get it back.")
    root = Path(out).expanduser() if out else default_out()
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise PatinaError(f"{root} is a file; choose a folder for the demo (--out DIR).")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
        raise PatinaError(f"{root} already holds other files; choose an empty or new folder for the demo (--out DIR).")
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("A Patina demo folder: `patina demo` may replace img/, reg/ and the config here.\n",
                                   encoding="utf-8")
        for src, name in ((dataset_dir(), "img"), (reg_dir(), "reg")):
            if (root / name).exists():
                shutil.rmtree(root / name)
            shutil.copytree(src, root / name)
    except OSError as exc:
        from patina.core.train.preflight import os_error_text

        raise PatinaError(os_error_text(exc, doing="write the demo folder")) from None
    cfg = demo_config(root)
    from patina.core.config.files import save_config

    path = save_config(root / CONFIG_NAME, cfg)
    return DemoFolder(root, Path(path), cfg)
