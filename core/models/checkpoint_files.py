"""Reading model weight files safely: ``.safetensors`` natively, pickled ``.ckpt``/``.pt`` only through
PyTorch's restricted ``weights_only`` unpickler.

* ``.safetensors`` holds raw tensors and a JSON header; nothing in it can run code.
* ``.ckpt``/``.pt``/``.pth``/``.bin`` are Python pickles. A pickle can name any importable function and
  have the unpickler call it (``os.system`` included). Patina therefore never calls
  ``torch.load(weights_only=False)``. It first lists the globals the pickle refers to *without*
  unpickling it (``torch.serialization.get_unsafe_globals_in_checkpoint``) and refuses the file if any
  of them is outside a narrow allow-list; then it loads with ``weights_only=True``.

The allow-list covers what real Stable Diffusion training checkpoints carry besides tensors:

* ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``: full CompVis/Lightning training
  checkpoints store callback state. It is mapped to an inert stub class here, so the real class
  (and pytorch_lightning) is never imported;
* ``numpy.dtype`` and numpy's scalar constructor, under both module spellings
  (``numpy.core.multiarray.scalar`` from numpy 1.x pickles, ``numpy._core.multiarray.scalar`` from 2.x).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patina.core.errors import PatinaError

if TYPE_CHECKING:  # pragma: no cover
    import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class ModelCheckpoint:
    """Inert stand-in for Lightning's ModelCheckpoint callback (only its saved attributes are kept)."""

    def __setstate__(self, state: Any) -> None:  # restricted unpickler BUILD
        if isinstance(state, dict):
            self.__dict__.update(state)


ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"


def _allowed_globals() -> list:
    """(object, pickled name) pairs the restricted unpickler may resolve, besides torch's own defaults."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        scalar = np.core.multiarray.scalar
    # ``numpy.dtype(...)`` builds an instance of a per-type class (numpy.dtypes.Float64DType, ...) whose
    # state the unpickler then sets, so those classes must be allowed as BUILD targets too. They are
    # plain data types; only numeric and bool ones are listed.
    dtype_classes = list({type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"})
    return [
        (ModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        (np.dtype, "numpy.dtype"),
        *dtype_classes,
    ]


def describe_file(path: Path) -> str:
    """A short guess of what a non-model file is, for error messages."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return "an unreadable file"
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a zip archive"
    if head[:1] in (b"\x80",):
        return "a pickle file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a binary file of unknown format"


def _require_file(path: str | os.PathLike, what: str = "model file") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise PatinaError(
            f"The {what} {str(p)!r} does not exist. Check the path (Patina never downloads models: "
            "pick a file or folder that is already on this computer)."
        )
    if p.is_dir():
        raise PatinaError(f"Expected a file for the {what}, but {str(p)!r} is a folder.")
    return p


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(9)
    except OSError:
        return False
    if len(raw) < 9:
        return False
    (n,) = struct.unpack("<Q", raw[:8])
    return 2 <= n <= _MAX_HEADER and raw[8:9] == b"{"


def sniff_format(path: str | os.PathLike) -> str | None:
    """``"safetensors"``, ``"pickle"`` (a torch.save file: zip archive or legacy pickle) or None,
    judged from the first bytes, not the file name (renamed files are common)."""
    if is_safetensors(path):
        return "safetensors"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"
    return None


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """Return ``({tensor name: {"dtype", "shape"}}, metadata)`` reading only the JSON header.

    No tensor data is read, so this is instant even for a 7 GB checkpoint."""
    p = _require_file(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if not 2 <= n <= _MAX_HEADER:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise PatinaError(
            f"{p.name} is not a valid .safetensors file ({exc}); it looks like {describe_file(p)}. "
            "The file may be truncated (an interrupted download) or renamed from another format."
        ) from None
    metadata = header.pop("__metadata__", None) or {}
    tensors = {k: v for k, v in header.items() if isinstance(v, dict)}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def pickle_unsafe_globals(path: str | os.PathLike) -> list[str]:
    """Globals a zip-format torch pickle refers to that Patina's restricted loader would not allow.

    The pickle is disassembled, not executed."""
    import torch

    with torch.serialization.safe_globals(_allowed_globals()):
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


def _load_pickle_checkpoint(p: Path) -> Any:
    import pickle

    import torch

    is_zip = zipfile.is_zipfile(p)
    if is_zip:
        try:
            unsafe = pickle_unsafe_globals(p)
        except Exception as exc:  # malformed archive: torch.load below will say the same
            raise PatinaError(f"{p.name} is not a readable PyTorch checkpoint ({exc}).") from None
        if unsafe:
            raise PatinaError(refusal_message(p, ", ".join(sorted(set(unsafe)))))
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(str(p), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        detail = _weights_only_detail(str(exc))
        if detail:
            raise PatinaError(refusal_message(p, detail)) from None
        raise PatinaError(
            f"{p.name} is not a PyTorch checkpoint Patina can read; it looks like {describe_file(p)}."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of a foreign file means "not a checkpoint"
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise PatinaError(
            f"{p.name} is not a PyTorch checkpoint Patina can read ({type(exc).__name__}: {first}); "
            f"it looks like {describe_file(p)}. Supported model files: .safetensors, .ckpt, .pt."
        ) from None


CONVERT_HINT = ("If you trust where the file came from, convert it once to .safetensors with a converter you "
                "trust (the model's publisher often offers a .safetensors download) and use that file; never "
                "convert a file from an unknown source.")


def refusal_message(p: Path, detail: str) -> str:
    """Why a pickle was refused: what, why that is dangerous, and the safe way forward."""
    return (f"Refusing to load {p}: it is a Python pickle that calls code a model file never needs ({detail}). "
            "Opening it could run any program on this computer, so Patina did not open it. " + CONVERT_HINT)


def is_weights_only_refusal(exc: BaseException) -> bool:
    """True for torch's restricted-unpickler refusal (also when wrapped by diffusers or transformers)."""
    seen = 0
    while exc is not None and seen < 6:
        text = str(exc)
        if ("weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text
                or "Unsupported global" in text):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def weights_only_detail(exc: BaseException) -> str:
    seen = 0
    while exc is not None and seen < 6:
        detail = _weights_only_detail(str(exc))
        if detail and detail != "a forbidden global":
            return detail
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return "a forbidden global"


def check_pickle_file(path: str | os.PathLike, owner: str) -> None:
    """Refuse a training-state pickle (optimizer.pt, ...) that is damaged or refers to code; nothing is run.

    *owner* names what the file belongs to in messages ("the training state <folder>")."""
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise PatinaError(f"{owner} is damaged: {p.name} is not a complete PyTorch file (it may be truncated by a "
                          "crash or a full disk). It cannot be resumed; start a new run, or resume from another "
                          "state folder.")
    try:
        unsafe = pickle_unsafe_globals(p)
    except Exception:  # noqa: BLE001 - a broken archive
        raise PatinaError(f"{owner} is damaged: {p.name} cannot be read (truncated or corrupt). It cannot be "
                          "resumed; start a new run, or resume from another state folder.") from None
    if unsafe:
        raise PatinaError(f"Refused to resume from {owner}: {p.name} is a pickle that calls code a training state "
                          f"never holds ({', '.join(sorted(set(unsafe)))}). Opening it could run any program on "
                          "this computer, so it was not opened. Patina writes training states with plain tensors "
                          "only, so this file was changed or made elsewhere; start a new run instead.")


def load_state_pickle(path: str | os.PathLike, owner: str) -> Any:
    """Load a training-state pickle with the restricted loader, with messages instead of torch's text."""
    import pickle

    import torch

    check_pickle_file(path, owner)
    p = Path(path)
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise PatinaError(f"Refused to resume from {owner}: {p.name} needs code a training state never holds "
                          f"({weights_only_detail(exc)}), so it was not opened. Start a new run instead.") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data inside the archive
        raise PatinaError(f"{owner} is damaged: {p.name} cannot be read ({type(exc).__name__}). It cannot be "
                          "resumed; start a new run, or resume from another state folder.") from None


def _weights_only_detail(message: str) -> str:
    """The useful line of torch's weights_only refusal ("Unsupported global: GLOBAL posix.system ...")."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            rest = line.split(":", 1)[1].strip()
            return rest.split(" was not an allowed global")[0][:200] or "a forbidden global"
        if "unsupported global" in line.lower() or "Can only build" in line:
            return line[:200]
    return "a forbidden global" if "weights_only" in message.lower() or "Weights only" in message else ""


def unwrap_state_dict(obj: Any) -> dict:
    """Follow nested ``state_dict`` keys (Lightning / A1111 checkpoints) down to the tensors."""
    seen = 0
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and seen < 8:
        obj = obj["state_dict"]
        seen += 1
    return obj


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Load every tensor of a ``.safetensors`` / ``.ckpt`` / ``.pt`` file onto the CPU.

    Pickled files go through the restricted loader described in the module docstring; a file that
    would need anything else is refused before it is unpickled. Raises :class:`PatinaError` with a
    message for the user on any problem."""
    import torch

    p = _require_file(path)
    kind = sniff_format(p)
    if kind == "safetensors" or (kind is None and p.suffix.lower() in SAFETENSORS_SUFFIXES):
        read_safetensors_header(p)  # clear message for a broken file
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # SafetensorError, OSError
            raise PatinaError(f"Could not read {p.name} as .safetensors ({exc}). The file may be damaged.") from None
    if kind is None:
        raise PatinaError(
            f"{p.name} is not a model file Patina can read (it looks like {describe_file(p)}). "
            f"Supported: {', '.join(SUPPORTED_SUFFIXES)}."
        )
    obj = unwrap_state_dict(_load_pickle_checkpoint(p))
    if not isinstance(obj, dict):
        raise PatinaError(f"{p.name} does not contain a state dict (found {type(obj).__name__}).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PatinaError(f"{p.name} contains no weights (no tensors in its state dict).")
    return tensors
