"""Checkpoint tensors read straight into the training dtype and device, one tensor at a time.

A 2 GB fp16 SD 1.5 file trained under bf16 mixed precision must never exist as fp32 in memory, nor as the
whole file (memory-mapped pages included) beside its converted copy. :func:`read_safetensors_to` reads
each tensor's bytes with plain file reads (no memory map: the page cache is not counted against the
process), into a tensor that already has the target dtype when the file's dtype matches, else into a
reused scratch buffer that is converted from; the result is moved to the device at once, so a CUDA run
holds at most two tensors of the file in CPU memory. Pickled ``.ckpt`` files must be unpickled whole
(:func:`~patina.core.models.checkpoint_files.load_state_dict_safely`); :func:`convert_in_place` then
converts them tensor by tensor, freeing each original as it goes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from patina.core.errors import PatinaError

if TYPE_CHECKING:
    import torch

DtypeFor = Callable[[str], "torch.dtype | None"]  # tensor name → target dtype (None: keep the file's)

_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
           "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _target(tensor_dtype, name: str, dtype_for: DtypeFor):
    want = dtype_for(name)
    return want if want is not None and tensor_dtype.is_floating_point else tensor_dtype


def _read_into(fh, offset: int, buf, name: str) -> None:
    view, done, size = memoryview(buf.numpy()), 0, buf.numel()
    fh.seek(offset)
    while done < size:
        n = fh.readinto(view[done:])
        if not n:
            raise ValueError(f"the data of {name} is cut short")
        done += n


def read_safetensors_to(path: str | Path, dtype_for: DtypeFor, device=None) -> dict[str, "torch.Tensor"]:
    """Every tensor of a ``.safetensors`` file, floating-point ones in ``dtype_for(name)``, on *device*
    (default CPU). A tensor kept as it is on the CPU is read straight into its own storage; one to convert
    or move is read into one of two reused scratch buffers (no fresh memory per tensor) and converted from
    there while the next one is read (both release the GIL). Raises :class:`PatinaError` for a damaged file."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    p = Path(path)
    device = torch.device(device or "cpu")
    out: dict[str, torch.Tensor] = {}
    try:
        with open(p, "rb", buffering=0) as fh, ThreadPoolExecutor(1, thread_name_prefix="patina-read") as pool:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n).decode("utf-8"))
            entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                             key=lambda kv: kv[1]["data_offsets"][0])
            largest = max((e["data_offsets"][1] - e["data_offsets"][0] for _k, e in entries), default=0)
            scratch: list = []

            def read(i: int):
                name, entry = entries[i]
                begin, end = entry["data_offsets"]
                file_dtype = getattr(torch, _DTYPES[entry["dtype"]])
                keep = _target(file_dtype, name, dtype_for) == file_dtype and device.type == "cpu"
                if keep:
                    buf = torch.empty(end - begin, dtype=torch.uint8)
                else:
                    if not scratch:
                        scratch.extend(torch.empty(largest, dtype=torch.uint8) for _ in range(2))
                    buf = scratch[i % 2][: end - begin]
                _read_into(fh, 8 + n + begin, buf, name)
                return buf.view(file_dtype).reshape(tuple(entry["shape"])), keep

            pending = pool.submit(read, 0) if entries else None
            for i, (name, _entry) in enumerate(entries):
                t, keep = pending.result()
                pending = pool.submit(read, i + 1) if i + 1 < len(entries) else None
                out[name] = t if keep else t.to(device=device, dtype=_target(t.dtype, name, dtype_for))
                del t
    except (KeyError, ValueError, TypeError, struct.error, OSError, RuntimeError) as exc:
        raise PatinaError(f"Could not read {p.name} as .safetensors ({exc}). The file may be damaged or "
                          "truncated.") from None
    return out


def convert_in_place(sd: dict, dtype_for: DtypeFor, device=None) -> dict:
    """Convert an already loaded state dict tensor by tensor (each original is released as it goes)."""
    import torch

    device = torch.device(device or "cpu")
    for name in list(sd):
        t = sd[name]
        sd[name] = t.to(device=device, dtype=_target(t.dtype, name, dtype_for))
        del t
    return sd
