"""Shared pieces of the LoRA tools (:mod:`~patina.core.lora.resize`, :mod:`~patina.core.lora.merge`,
:mod:`~patina.core.lora.merge_into`, :mod:`~patina.core.lora.extract`).

Every tool is a plain function that takes ``progress(done, total, message)`` and ``cancelled() -> bool``
callbacks, so a Qt worker thread can drive it: ``progress`` is called once per module (or tensor), and
``cancelled`` is polled just as often; when it returns True the tool raises :class:`Cancelled` and leaves no
output behind (outputs are written to a temporary file/folder next to the target and renamed at the end).

The math: a kohya LoRA/LoCon module holds ``lora_down`` (r×in[×k×k]), ``lora_up`` (out×r[×1×1]) and ``alpha``;
its weight change is ``ΔW = (up @ down) · alpha/r``. SVDs of such products are computed from the factors
(QR of each factor, SVD of the small r×r core), which is exact and needs no out×in matrix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from patina.core.errors import PatinaError

if TYPE_CHECKING:  # pragma: no cover
    import torch

Progress = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")


class Cancelled(PatinaError):
    """The user cancelled a tool; nothing was written."""

    exit_code = 130

    def __init__(self, message: str = "Cancelled; no output was written."):
        super().__init__(message)


class Steps:
    """Calls *progress* and polls *cancelled* (either may be None)."""

    def __init__(self, progress: Progress | None, cancelled: CancelCheck | None, total: int = 0):
        self.progress = progress
        self.cancelled = cancelled
        self.total = total
        self.done = 0

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled()

    def step(self, message: str, advance: int = 1) -> None:
        self.check()
        self.done += advance
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, message)


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ModuleReport:
    """One module of a tool's output: ranks before/after and the share of the weight change kept
    (``retained`` = ‖ΔW_kept‖_F / ‖ΔW‖_F, 1.0 when nothing was cut)."""

    name: str
    kind: str  # linear | conv1x1 | conv3x3
    rank_in: int
    rank_out: int
    retained: float = 1.0
    note: str = ""


@dataclass
class Report:
    """What a tool did. ``lines()`` is a short human summary (the CLI prints it; a GUI can show it)."""

    tool: str
    output: Path
    modules: list[ModuleReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self, per_module: bool = False) -> list[str]:
        out = [f"{self.tool}: wrote {self.output} in {self.seconds:.1f} s"]
        if self.modules:
            ranks = sorted({m.rank_out for m in self.modules})
            rtxt = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}"
            worst = min(self.modules, key=lambda m: m.retained)
            out.append(f"  {len(self.modules)} modules, rank {rtxt}; retained energy (Frobenius) min "
                       f"{worst.retained:.4f} ({worst.name}), mean "
                       f"{sum(m.retained for m in self.modules) / len(self.modules):.4f}")
        for k, v in self.extra.items():
            out.append(f"  {k}: {v}")
        if per_module:
            for m in self.modules:
                out.append(f"  {m.name}: {m.kind} rank {m.rank_in} → {m.rank_out}, retained {m.retained:.4f}"
                           + (f" ({m.note})" if m.note else ""))
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


# ----------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------

def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, folder: bool = False) -> Path:
    """Refuse an output that is one of the inputs (or inside an input folder); for files, require
    ``.safetensors``. Returns the output path."""
    out = Path(output).expanduser()
    for i in inputs:
        ip = Path(i).expanduser()
        if _same(out, ip):
            raise PatinaError(f"The output {out} is the same as an input; choose a new file name "
                              "(the tools never overwrite their inputs).")
        if ip.is_dir():
            with contextlib.suppress(ValueError):
                out.resolve().relative_to(ip.resolve())
                raise PatinaError(f"The output {out} is inside the input folder {ip}; choose a path outside it.")
    if not folder and out.suffix.lower() != ".safetensors":
        raise PatinaError(f"The output {out.name} must be a .safetensors file.")
    if out.is_dir() and not folder:
        raise PatinaError(f"The output {out} is a folder; give a .safetensors file name.")
    if not out.parent.exists():
        raise PatinaError(f"The output folder {out.parent} does not exist.")
    return out


def require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise PatinaError(f"The {what} {p} does not exist.")
    if p.is_dir():
        raise PatinaError(f"The {what} {p} is a folder; choose a .safetensors file.")
    return p


def pick_device(device: str | None) -> "torch.device":
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PatinaError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu.")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------------------
# Reading LoRA files module by module
# ----------------------------------------------------------------------------------------------------------

_UNSUPPORTED = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr", "lokr_w2": "LoKr",
                "lora_mid.weight": "LoCon with a Tucker/CP core", "dora_scale": "DoRA", "oft_blocks": "OFT",
                "lora_A.weight": "PEFT/diffusers-format LoRA", "diff": "full-weight difference"}


@dataclass
class LoraModule:
    name: str
    down: "torch.Tensor"
    up: "torch.Tensor"
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def kind(self) -> str:
        if self.down.ndim == 4:
            return "conv1x1" if tuple(self.down.shape[2:]) == (1, 1) else "conv3x3"
        return "linear"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (int(self.up.shape[0]),) + tuple(int(x) for x in self.down.shape[1:])

    def factors(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(A, B) with ΔW.flatten(1) = A @ B: A = up·alpha/r (out×r), B = down (r×in·k·k), float32."""
        a = self.up.reshape(self.up.shape[0], -1).float() * self.scale
        b = self.down.reshape(self.down.shape[0], -1).float()
        return a, b

    def delta(self) -> "torch.Tensor":
        a, b = self.factors()
        return (a @ b).reshape(self.weight_shape)


class LoraReader:
    """A kohya LoRA/LoCon ``.safetensors`` opened with ``safe_open``: module names and metadata at once,
    each module's tensors read only when asked for (memory stays at one module)."""

    def __init__(self, path: str | os.PathLike, what: str = "LoRA file"):
        from safetensors import safe_open

        self.path = require_file(path, what)
        try:
            self._f = safe_open(str(self.path), framework="pt")
            self.metadata = dict(self._f.metadata() or {})
            keys = list(self._f.keys())
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
            raise PatinaError(f"{self.path.name} is not a readable .safetensors LoRA file ({exc}).") from None
        self._keys: dict[str, dict[str, str]] = {}
        for k in keys:
            name, _, suffix = k.partition(".")
            self._keys.setdefault(name, {})[suffix] = k
        for name, parts in self._keys.items():
            for suffix in parts:
                if suffix in _UNSUPPORTED:
                    raise PatinaError(f"{self.path.name} is a {_UNSUPPORTED[suffix]} file (module {name} has "
                                      f"'{suffix}'); this tool works on kohya LoRA/LoCon files.")
        self.names = [n for n, p in self._keys.items() if "lora_down.weight" in p and "lora_up.weight" in p]
        if not self.names:
            raise PatinaError(f"{self.path.name} holds no LoRA module (no '*.lora_down.weight' keys); "
                              "choose a kohya-format LoRA file.")

    def __enter__(self) -> "LoraReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f = None

    def module(self, name: str) -> LoraModule:
        parts = self._keys[name]
        down = self._f.get_tensor(parts["lora_down.weight"])
        up = self._f.get_tensor(parts["lora_up.weight"])
        rank = int(down.shape[0])
        alpha = float(self._f.get_tensor(parts["alpha"]).item()) if "alpha" in parts else float(rank)
        if up.shape[1] != rank:
            raise PatinaError(f"{self.path.name}: module {name} is damaged (lora_up has rank {up.shape[1]}, "
                              f"lora_down {rank}).")
        return LoraModule(name, down, up, alpha or float(rank))

    def dims(self) -> tuple[int, int]:
        """(largest rank of linear/1×1 modules, largest rank of 3×3 modules) from the headers only."""
        lin = conv = 0
        for n in self.names:
            shape = self._f.get_slice(self._keys[n]["lora_down.weight"]).get_shape()
            r = int(shape[0])
            if len(shape) == 4 and tuple(shape[2:]) != (1, 1):
                conv = max(conv, r)
            else:
                lin = max(lin, r)
        return lin, conv


def lora_family_hint(names: Iterable[str], metadata: Mapping[str, str]) -> str | None:
    """"sdxl" or "sd1/sd2" from ``ss_base_model_version`` or the key names; None when unknown."""
    ver = metadata.get("ss_base_model_version", "")
    if ver.startswith("sdxl"):
        return "sdxl"
    if ver.startswith("sd_v"):
        return "sd1/sd2"
    names = list(names)
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names) or any(
            n.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block"))
            for n in names):
        return "sdxl"
    if any(n.startswith("lora_te_") for n in names):
        return "sd1/sd2"
    return None


# ----------------------------------------------------------------------------------------------------------
# SVD helpers
# ----------------------------------------------------------------------------------------------------------

def svd_of_product(a: "torch.Tensor", b: "torch.Tensor", device: "torch.device | None" = None):
    """(U, S, Vh) of ``a @ b`` (a: m×r, b: r×n) from the factors: QR of a and bᵀ, SVD of the r×r core.
    Exact; costs O((m+n)·r²) instead of an m×n SVD."""
    import torch

    dev = device or a.device
    a = a.to(dev, torch.float32)
    b = b.to(dev, torch.float32)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.T)
    u, s, vh = torch.linalg.svd(ra @ rb.T, full_matrices=False)
    return (qa @ u), s, (vh @ qb.T)


def svd_full(w: "torch.Tensor", device: "torch.device | None" = None):
    import torch

    dev = device or w.device
    return torch.linalg.svd(w.to(dev, torch.float32), full_matrices=False)


def choose_rank(s: "torch.Tensor", max_rank: int, dynamic: str | None = None, param: float | None = None) -> int:
    """The rank to keep for singular values *s* (descending).

    * fixed (``dynamic=None``): ``max_rank``;
    * ``sv_ratio``: keep the singular values larger than ``s[0] / param``;
    * ``sv_cumulative``: the smallest rank whose sum of singular values reaches ``param`` of the total;
    * ``sv_fro``: the smallest rank whose Frobenius norm reaches ``param`` of the total
      (Σ s_i² ≥ param² · Σ s²).

    The result is at least 1 and at most ``min(max_rank, len(s))``.
    """
    import torch

    n = int(s.numel())
    cap = max(1, min(int(max_rank), n))
    if dynamic is None:
        return cap
    s = s.double().cpu()
    total = float(s.sum())
    if n == 0 or total <= 0:
        return 1
    if dynamic == "sv_ratio":
        k = int((s > s[0] / float(param)).sum())
    elif dynamic == "sv_cumulative":
        cum = torch.cumsum(s, 0) / total
        k = int(torch.searchsorted(cum, torch.tensor([float(param)], dtype=cum.dtype) - 1e-12)[0]) + 1
    elif dynamic == "sv_fro":
        sq = s * s
        cum = torch.cumsum(sq, 0) / float(sq.sum())
        k = int(torch.searchsorted(cum, torch.tensor([float(param) ** 2], dtype=cum.dtype) - 1e-12)[0]) + 1
    else:
        raise PatinaError(f"Unknown dynamic method {dynamic!r}; use one of {', '.join(DYNAMIC_METHODS)}.")
    return max(1, min(k, cap))


def check_dynamic(dynamic: str | None, param: float | None) -> None:
    if dynamic is None:
        return
    if dynamic not in DYNAMIC_METHODS:
        raise PatinaError(f"Unknown dynamic method {dynamic!r}; use one of {', '.join(DYNAMIC_METHODS)}.")
    if param is None:
        raise PatinaError(f"The dynamic method {dynamic} needs a parameter (--dynamic-param).")
    if dynamic == "sv_ratio" and not param >= 1:
        raise PatinaError(f"sv_ratio needs a parameter ≥ 1 (the largest/smallest kept singular value); got {param}.")
    if dynamic in ("sv_fro", "sv_cumulative") and not 0 < param <= 1:
        raise PatinaError(f"{dynamic} needs a parameter in (0, 1] (the share to keep); got {param}.")


def retained(s: "torch.Tensor", k: int) -> float:
    sq = s.double() ** 2
    total = float(sq.sum())
    return 1.0 if total <= 0 else float((sq[:k].sum() / total).sqrt())


def to_lora(u: "torch.Tensor", s: "torch.Tensor", vh: "torch.Tensor", k: int, weight_shape: Sequence[int],
            scale: float) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(up, down) of rank *k* whose product times *scale* is U_k S_k Vh_k; √S goes to each side."""
    root = s[:k].clamp_min(0).sqrt()
    up = (u[:, :k] * root[None, :]) / scale
    down = root[:, None] * vh[:k]
    out = int(weight_shape[0])
    if len(weight_shape) == 4:
        up = up.reshape(out, k, 1, 1)
        down = down.reshape(k, *[int(x) for x in weight_shape[1:]])
    return up.cpu().contiguous(), down.cpu().contiguous()


# ----------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------

def carried_metadata(md: Mapping[str, str]) -> dict[str, str]:
    """A LoRA's metadata without the hashes (recomputed on save)."""
    return {k: v for k, v in md.items() if not k.startswith("sshs_") and k != "modelspec.hash_sha256"}


def add_comment(md: dict[str, str], text: str) -> None:
    old = md.get("ss_training_comment", "")
    md["ss_training_comment"] = (old + "; " if old and old != "None" else "") + text


def update_dims(md: dict[str, str], modules: Mapping[str, tuple[str, int, float]], dynamic: bool) -> None:
    """``ss_network_dim``/``ss_network_alpha`` and ``conv_dim``/``conv_alpha`` in ``ss_network_args`` from the
    written modules ({name: (kind, rank, alpha)}); "Dynamic" when ranks vary (kohya's convention)."""
    lin = [(r, a) for k, r, a in modules.values() if k != "conv3x3"]
    conv = [(r, a) for k, r, a in modules.values() if k == "conv3x3"]

    def one(pairs):
        if not pairs:
            return None
        if dynamic and len(set(pairs)) > 1:
            return "Dynamic", "Dynamic"
        r, a = max(pairs)
        return str(r), str(float(a))

    d = one(lin)
    if d:
        md["ss_network_dim"], md["ss_network_alpha"] = d
    try:
        args = json.loads(md.get("ss_network_args") or "{}")
        if not isinstance(args, dict):
            args = {}
    except ValueError:
        args = {}
    c = one(conv)
    if c:
        args["conv_dim"], args["conv_alpha"] = c
    else:
        args.pop("conv_dim", None)
        args.pop("conv_alpha", None)
    md["ss_network_args"] = json.dumps(args)
    md.setdefault("ss_network_module", "networks.lora")


# ----------------------------------------------------------------------------------------------------------
# Streaming safetensors writer and atomic folders
# ----------------------------------------------------------------------------------------------------------

_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
              "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
              "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


def st_dtype(dtype: "torch.dtype") -> str:
    name = str(dtype).replace("torch.", "")
    if name not in _ST_DTYPES:
        raise PatinaError(f"Cannot write a tensor of type {name} to safetensors.")
    return _ST_DTYPES[name]


def write_safetensors_stream(path: Path, entries: Sequence[tuple[str, "torch.dtype", Sequence[int]]],
                             produce: Callable[[str], "torch.Tensor"], metadata: Mapping[str, str] | None,
                             steps: Steps | None = None) -> None:
    """Write a safetensors file tensor by tensor: the header is built from *entries* (name, dtype, shape),
    then ``produce(name)`` is called for each in order. Memory stays at one tensor. The file is written to
    a temporary sibling and renamed at the end; on any error (or cancel) the temporary file is removed."""
    import torch

    from patina.core.atomic import atomic_temp_path, commit_temp

    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    sizes = []
    for name, dtype, shape in entries:
        n = 1
        for x in shape:
            n *= int(x)
        nbytes = n * torch.tensor([], dtype=dtype).element_size()
        header[name] = {"dtype": st_dtype(dtype), "shape": [int(x) for x in shape],
                        "data_offsets": [offset, offset + nbytes]}
        sizes.append(nbytes)
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = atomic_temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for (name, dtype, shape), nbytes in zip(entries, sizes):
                t = produce(name)
                if t.dtype != dtype or tuple(t.shape) != tuple(int(x) for x in shape):
                    raise RuntimeError(f"tensor {name}: expected {dtype} {tuple(shape)}, got {t.dtype} {tuple(t.shape)}")
                data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                if len(data) != nbytes:
                    raise RuntimeError(f"tensor {name}: {len(data)} bytes, expected {nbytes}")
                fh.write(data)
                if steps is not None:
                    steps.step(name)
        commit_temp(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder next to *target*; on success it replaces *target* (an existing folder is moved
    aside first and removed afterwards); on error or cancel it is removed."""
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
