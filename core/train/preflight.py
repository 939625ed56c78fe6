"""The pre-flight check: everything that can be known before the first training step, checked at once.

A run must never die at its end for something that was knowable at its start. :func:`preflight` looks at a
complete config (already through the schema) and returns every :class:`~patina.core.config.schema.Problem` it finds:

* sample prompts (every line, the way the sampler will read them);
* the output, logging, sample and state folders: each exists or can be created, is a folder and not a
  file, can be written to; the disk has room for the planned files (estimated from the rank, the modules
  and the save settings); every file name the run will write fits the file system;
* the device: 8-bit optimizers (bitsandbytes and a CUDA GPU), fp16/bf16 mixed precision without a GPU or
  on a card without bf16, xformers, optional optimizer packages, training on the CPU at all;
* a resume state folder: complete, readable, not damaged, and no pickle in it that needs code to load.

Problems that have a working alternative carry it in ``Problem.fix`` (``{key: value}``): the window offers
it as a one-click fix and the command line prints the ``--set key=value`` that applies it.

The same function serves the plan (window and ``patina train``), the engine before it loads any model, and
``patina config validate``. Only :func:`probe_device` imports torch, and only when called.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from patina.core.errors import PatinaError
from patina.core.config.schema import Problem, missing_required

# --- the device --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """What this machine offers for training (see :func:`probe_device`)."""

    cuda: bool
    name: str = "CPU"
    bf16: bool = False
    bitsandbytes: bool = False
    xformers: bool = False
    total_memory: int | None = None   # bytes on the card
    free_memory: int | None = None    # bytes a run started now can use (free + what this process holds)


def _has_package(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def probe_device() -> DeviceInfo:
    """Look at this machine without loading any model (imports torch; call it off the GUI thread)."""
    import torch

    cuda = bool(torch.cuda.is_available())
    name, bf16, total, free = "CPU", False, None, None
    if cuda:
        try:
            name = torch.cuda.get_device_name(0)
            bf16 = bool(torch.cuda.is_bf16_supported())
            free, total = torch.cuda.mem_get_info(0)
            # what this process already holds (a model kept from the last run) is reused or freed by the next
            free += torch.cuda.memory_reserved(0)
        except Exception:  # noqa: BLE001 - a half-working driver: treat the card as the minimum
            name, bf16 = "CUDA GPU", False
    return DeviceInfo(cuda=cuda, name=name, bf16=bf16, bitsandbytes=_has_package("bitsandbytes"),
                      xformers=_has_package("xformers"), total_memory=total, free_memory=free)


# 8-bit optimizers (bitsandbytes, CUDA only) and the plain optimizer that does the same job everywhere.
EIGHT_BIT = {"AdamW8bit": "AdamW", "PagedAdamW8bit": "AdamW", "SGDNesterov8bit": "SGDNesterov", "Lion8bit": "Lion"}
# Optimizers from optional packages: optimizer → (import name, pip name).
OPTIONAL_PACKAGES = {"Lion": ("lion_pytorch", "lion-pytorch"), "Prodigy": ("prodigyopt", "prodigyopt"),
                     "DAdaptation": ("dadaptation", "dadaptation"), "DAdaptAdam": ("dadaptation", "dadaptation")}

CPU_WARNING = ("no CUDA GPU found: training runs on the CPU, which is very slow (minutes per step for a real "
               "model); fine for a test run")


def machine_defaults(device: DeviceInfo) -> tuple[dict[str, Any], str]:
    """Settings that replace schema defaults which cannot run on this machine, and a sentence saying so.

    The schema's defaults are for an NVIDIA GPU (AdamW8bit, fp16). Without CUDA they would fail or be
    silently ignored, so a new config made on such a machine starts from AdamW in full precision."""
    if device.cuda:
        changes: dict[str, Any] = {}
        if not device.bitsandbytes:
            changes["optimizer"] = "AdamW"
        if not changes:
            return {}, ""
        return changes, ("bitsandbytes is not installed, so the new config uses the AdamW optimizer instead of "
                         "AdamW8bit (install bitsandbytes to save memory with AdamW8bit).")
    return ({"optimizer": "AdamW", "mixed_precision": "no"},
            "No CUDA GPU on this machine, so the new config uses the AdamW optimizer (AdamW8bit needs an NVIDIA "
            "GPU) and mixed precision 'no' (fp16 needs a GPU). Change them back on a machine with an NVIDIA GPU.")


def check_device(cfg: Mapping[str, Any], device: DeviceInfo) -> list[Problem]:
    out: list[Problem] = []
    opt = cfg["optimizer"]
    if opt in EIGHT_BIT:
        alt = EIGHT_BIT[opt]
        if alt in OPTIONAL_PACKAGES and not _has_package(OPTIONAL_PACKAGES[alt][0]):
            alt = "AdamW"
        if not device.cuda:
            why = "needs an NVIDIA GPU with CUDA (bitsandbytes), and this machine has none"
        elif not device.bitsandbytes:
            why = "needs the bitsandbytes package, which is not installed (pip install bitsandbytes)"
        else:
            why = ""
        if why:
            out.append(Problem("optimizer", f"{opt} {why}; use {alt} instead", opt, fix={"optimizer": alt}))
    elif opt in OPTIONAL_PACKAGES and not _has_package(OPTIONAL_PACKAGES[opt][0]):
        pip = OPTIONAL_PACKAGES[opt][1]
        out.append(Problem("optimizer", f"the {opt} optimizer needs the '{pip}' package, which is not installed; "
                           f"install it with `pip install {pip}`, or choose another optimizer", opt))
    mp = cfg["mixed_precision"]
    if not device.cuda and mp == "fp16":
        out.append(Problem("mixed_precision", "Mixed precision fp16 needs a GPU; without one the run trains in full "
                           "precision anyway, so set it to 'no'", mp, "warning", fix={"mixed_precision": "no"}))
    elif not device.cuda and mp == "bf16":
        out.append(Problem("mixed_precision", "Mixed precision bf16 on the CPU is emulated and slower than full "
                           "precision; set it to 'no'", mp, "warning", fix={"mixed_precision": "no"}))
    elif device.cuda and mp == "bf16" and not device.bf16:
        out.append(Problem("mixed_precision", f"Mixed precision bf16 is not supported by {device.name} (it needs an RTX "
                           "30 series or newer); use fp16", mp, fix={"mixed_precision": "fp16"}))
    if cfg["xformers"] == "xformers":
        if not device.cuda:
            why = "needs a CUDA GPU"
        elif not device.xformers:
            why = "needs the xformers package, which is not installed"
        else:
            why = ""
        if why:
            out.append(Problem("xformers", f"xformers attention {why}; sdpa (PyTorch's built-in memory-efficient "
                               "attention) does the same job", "xformers", fix={"xformers": "sdpa"}))
    if not device.cuda:
        from patina.core.train.threads import choose_threads

        n, why = choose_threads(cfg.get("cpu_threads", 0))
        out.append(Problem("device", f"{CPU_WARNING} (CPU training is for trying things out). It uses {n} CPU "
                           f"thread(s) ({why}; Advanced → CPU threads)", None, "warning"))
    return out


# --- sample prompts ------------------------------------------------------------------------------------------

def check_sample_prompts(cfg: Mapping[str, Any]) -> list[Problem]:
    """Every prompt line the sampler would refuse, each as its own problem."""
    from patina.core.dataset.buckets import parse_resolution
    from patina.core.train.sampling import parse_prompt_line

    text = cfg.get("sample_prompts") or ""
    try:
        size = parse_resolution(cfg["max_resolution"])
    except ValueError:
        size = (512, 512)
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            parse_prompt_line(line, default_size=size, lineno=i)
        except PatinaError as exc:
            msg = str(exc)
            msg = msg[len("Sample prompts, "):] if msg.startswith("Sample prompts, ") else msg
            out.append(Problem("sample_prompts", msg.rstrip(".") + "; fix that line (Samples page)"))
    return out


# --- folders and files ---------------------------------------------------------------------------------------

# A temporary sibling adds at most this many characters to a name: ".<name>.<8 random>.tmp" (patina.core.atomic)
# and "<name>.tmp-<pid>" for state folders.
_TEMP_EXTRA = 16


def _nearest_existing(p: Path) -> Path:
    probe = p
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    return probe


def can_write(folder: Path) -> str | None:
    """None when a file can be created in the existing *folder*, else the reason (never leaves a file)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(folder, os.W_OK | os.X_OK):
        return "Permission denied"
    return None


def check_folder(path: str | os.PathLike, key: str, what: str) -> list[Problem]:
    """The folder *path* exists or can be created, is a folder, and can be written to."""
    p = Path(os.path.expanduser(str(path)))
    probe = _nearest_existing(p)
    if os.path.lexists(probe) and not probe.is_dir():
        if probe == p:
            return [Problem(key, f"{p} is a file, not a folder; choose a folder for the {what}")]
        return [Problem(key, f"the {what} {p} cannot be created because {probe} is a file; choose another folder")]
    if not probe.exists():
        return [Problem(key, f"the {what} {p} cannot be created (no existing folder above it); choose another one")]
    reason = can_write(probe)
    if reason:
        if probe == p:
            return [Problem(key, f"the {what} {p} is not writable ({reason}); choose a folder you can write to, "
                                 "or change its permissions")]
        return [Problem(key, f"the {what} {p} cannot be created: {probe} is not writable ({reason}); choose a "
                             "folder you can write to, or change its permissions")]
    return []


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def planned_names(cfg: Mapping[str, Any]) -> list[str]:
    """The longest file and folder names the run may write into the output folder."""
    name = cfg["output_name"]
    names = [f"{name}.safetensors", f"{name}-state", f"{name}-step00000000.safetensors",
             f"{name}-step00000000-state", f"{name}-000000.safetensors", f"{name}-000000-state"]
    if (cfg.get("sample_prompts") or "").strip():
        names.append(f"{name}_e000000_00_20260101000000_4294967295.png")
    return names


# Approximate LoRA parameters per unit of rank (UNet + text encoders, Standard LoRA), and per unit of
# convolution rank for LoCon; from the sizes of real kohya-format files (an SD 1.5 rank-16 LoRA is 18 MB
# in fp16).
_PARAMS_PER_RANK = {"sd1": 590_000, "sd2": 700_000, "sdxl": 3_560_000}
_CONV_PARAMS_PER_RANK = {"sd1": 800_000, "sd2": 800_000, "sdxl": 2_100_000}


def estimate_sizes(cfg: Mapping[str, Any], family: str) -> tuple[int, int]:
    """(bytes of one saved LoRA file, bytes of one state folder), rounded up."""
    fam = family if family in _PARAMS_PER_RANK else "sdxl"
    lora_type = cfg.get("LoRA_type")
    dim, conv_dim = int(cfg["network_dim"]), int(cfg.get("conv_dim") or 1)
    if lora_type == "LyCORIS/LoKr":  # Kronecker factors: far smaller than a LoRA; bounded by rank 8's size
        dim, conv_dim = min(dim, 8), min(conv_dim, 8)
    params = _PARAMS_PER_RANK[fam] * dim
    if lora_type in ("Kohya LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr"):
        params += _CONV_PARAMS_PER_RANK[fam] * conv_dim
    if lora_type == "LyCORIS/LoHa":  # two LoRA-sized pairs per module
        params *= 2
    per = 4 if cfg.get("save_precision") == "float" else 2
    lora = params * per + 1_000_000  # header and metadata
    state = params * 16 + 1_000_000  # fp32 weights + optimizer moments + scheduler and RNG
    return lora, state


def planned_file_counts(cfg: Mapping[str, Any], epochs: int, total_steps: int) -> tuple[int, int]:
    """(LoRA files, state folders) the run keeps at most at the same time."""
    loras, states = 1, 1  # the final file; a state on Stop or at the end
    n = cfg["save_every_n_epochs"]
    if n and epochs > 1:
        count = max(0, (epochs - 1) // n)
        if cfg["save_last_n_epochs"]:
            count = min(count, cfg["save_last_n_epochs"] + 1)
        loras += count
        if cfg["save_state"]:
            states += min(count, cfg["save_last_n_epochs_state"] + 1) if cfg["save_last_n_epochs_state"] else count
    n = cfg["save_every_n_steps"]
    if n and total_steps > n:
        count = max(0, (total_steps - 1) // n)
        if cfg["save_last_n_steps"]:
            count = min(count, cfg["save_last_n_steps"] // n + 1)
        loras += count
        if cfg["save_state"]:
            keep = cfg["save_last_n_steps_state"]
            states += min(count, keep // n + 1) if keep else count
    return loras, states


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} TB"  # pragma: no cover


def check_output(cfg: Mapping[str, Any], *, family: str = "auto", epochs: int = 1, total_steps: int = 1) -> list[Problem]:
    """Output, sample, state and logging folders; free space; file-name lengths."""
    out: list[Problem] = []
    if not str(cfg.get("output_dir") or "").strip():
        return out
    outdir = Path(os.path.expanduser(str(cfg["output_dir"])))
    folder_problems = check_folder(outdir, "output_dir", "output folder")
    out += folder_problems
    for sub, what in (("sample", "sample folder"),):
        if (cfg.get("sample_prompts") or "").strip() and not folder_problems:
            p = outdir / sub
            if os.path.lexists(p) and not p.is_dir():
                out.append(Problem("output_dir", f"{p} is a file, but the {what} must go there; move or rename "
                                   "that file"))
    if not folder_problems:
        for state in (outdir / f"{cfg['output_name']}-state",):
            if os.path.lexists(state) and not state.is_dir():
                out.append(Problem("output_dir", f"{state} is a file, but the training state folder must go "
                                   "there; move or rename that file"))
    if cfg.get("logging_dir"):
        out += check_folder(cfg["logging_dir"], "logging_dir", "logging folder")
    probe = _nearest_existing(outdir)
    if probe.is_dir():
        limit = _name_max(probe)
        longest = max(planned_names(cfg), key=lambda s: len(s.encode("utf-8")))
        size = len(longest.encode("utf-8")) + _TEMP_EXTRA
        if size > limit:
            name = cfg["output_name"]
            room = max(1, len(name.encode("utf-8")) - (size - limit))
            out.append(Problem("output_name", f"is too long for the file system: names such as \"{longest[:40]}…\" "
                               f"would exceed its limit of {limit} bytes per name; shorten the output name to at "
                               f"most {room} characters", name[:40] + "…" if len(name) > 40 else name))
        if not folder_problems:
            try:
                free = shutil.disk_usage(probe).free
            except OSError:
                free = None
            if free is not None:
                lora, state = estimate_sizes(cfg, family)
                n_lora, n_state = planned_file_counts(cfg, epochs, total_steps)
                need = n_lora * lora + n_state * state
                if free < need:
                    out.append(Problem("output_dir", f"not enough free space: the run will write about "
                                       f"{_human(need)} ({n_lora} LoRA file(s), {n_state} training state(s)) but "
                                       f"{probe} has {_human(free)} free; free some space or choose another "
                                       "folder"))
    return out


# --- resume states ---------------------------------------------------------------------------------------

STATE_FILES = ("lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "train_state.json")

# Settings a resumed run may change: its length, what and when it saves and samples, where it writes, the
# file metadata and loader details. Anything else shapes the network, the optimizer or the data order that
# the saved state belongs to.
RESUME_CHANGEABLE = frozenset({
    "epoch", "max_train_epochs", "max_train_steps", "save_every_n_epochs", "save_every_n_steps",
    "save_last_n_steps", "save_last_n_steps_state", "save_last_n_epochs", "save_last_n_epochs_state",
    "save_state", "save_state_on_train_end", "save_precision", "resume", "output_dir", "output_name",
    "logging_dir", "train_data_dir", "reg_data_dir", "vae", "training_comment", "metadata_title",
    "metadata_author", "metadata_description", "metadata_license", "metadata_tags", "sample_every_n_steps",
    "sample_every_n_epochs", "sample_at_first", "sample_sampler", "sample_prompts", "vae_batch_size",
    "cache_latents_to_disk", "gradient_checkpointing", "xformers", "mixed_precision", "cache_latents",
})


def read_state_json(folder: Path) -> dict:
    """``train_state.json`` of a state folder, or a clear refusal."""
    p = folder / "train_state.json"
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PatinaError(f"{p} cannot be read ({exc.strerror or exc}); check its permissions.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatinaError(f"The training state {folder} is damaged: {p.name} is not valid JSON ({exc}). "
                          "It cannot be resumed; start a new run, or resume from another state folder.") from None
    need = ("step", "epoch", "seed", "config")
    if not isinstance(state, dict) or any(k not in state for k in need) or not isinstance(state.get("config"), dict):
        raise PatinaError(f"The training state {folder} is damaged: {p.name} lacks "
                          f"{', '.join(k for k in need if not isinstance(state, dict) or k not in state) or 'config'}. "
                          "It cannot be resumed; start a new run, or resume from another state folder.")
    try:
        int(state["step"]), int(state["epoch"]), int(state.get("micro_in_epoch", 0))
    except (TypeError, ValueError):
        raise PatinaError(f"The training state {folder} is damaged: {p.name} has no valid step or epoch. "
                          "Start a new run, or resume from another state folder.") from None
    return state


def check_state_folder(folder: str | os.PathLike) -> dict:
    """Refuse a state folder that is missing, incomplete, damaged or holds a pickle that needs code; return its
    ``train_state.json``. Nothing is unpickled here."""
    d = Path(os.path.expanduser(str(folder)))
    if not d.is_dir():
        what = "is a file" if d.exists() else "does not exist"
        raise PatinaError(f"The resume folder {d} {what}. Choose a <name>-state folder written by Patina.")
    missing = [f for f in STATE_FILES if not (d / f).is_file()]
    if missing:
        raise PatinaError(f"{d} is not a complete Patina training state (missing: {', '.join(missing)}). "
                          "Choose a <name>-state folder written by Patina.")
    state = read_state_json(d)
    from patina.core.models.checkpoint_files import check_pickle_file, read_safetensors_header

    try:
        read_safetensors_header(d / "lora.safetensors")
    except PatinaError as exc:
        raise PatinaError(f"The training state {d} is damaged: {exc}") from None
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        check_pickle_file(d / name, f"the training state {d}")
    return state


def check_resume_settings(saved: Mapping[str, Any], wanted: Mapping[str, Any], *, explicit: set[str] | None = None
                          ) -> list[Problem]:
    """Settings in *wanted* that differ from the saved run's and cannot change on resume.

    *explicit*: keys the person asked to change (``--set``); when given, only those count as wanted
    changes and every other key keeps the saved value."""
    out = []
    keys = explicit if explicit is not None else set(wanted)
    for key in sorted(keys):
        if key in RESUME_CHANGEABLE or key not in saved or key not in wanted or key.startswith("_"):
            continue
        old, new = saved[key], wanted[key]
        if old == new:
            continue
        if key == "pretrained_model_name_or_path" and old and new and Path(str(old)).name == Path(str(new)).name:
            continue  # the same model file, moved
        if key == "seed" and not new:
            continue  # 0 = "the saved run's seed"
        out.append(Problem(key, f"cannot change when resuming (the saved run used {old!r}); resume with the saved "
                           "value, or start a new run to use the new one", new))
    return out


# --- everything -----------------------------------------------------------------------------------------------

def preflight(cfg: Mapping[str, Any], *, device: DeviceInfo | None = None, family: str = "auto", epochs: int = 1,
              total_steps: int = 1) -> list[Problem]:
    """Every problem that would stop or spoil the run, found without loading a model (see module docstring).

    *cfg* is a complete config; *device* None skips the device checks; *epochs*/*total_steps* come from the
    plan and size the free-space estimate."""
    problems: list[Problem] = []
    problems += check_sample_prompts(cfg)
    problems += check_output(cfg, family=family, epochs=epochs, total_steps=total_steps)
    if device is not None:
        problems += check_device(cfg, device)
    return problems


def config_checks(cfg: Mapping[str, Any], device: DeviceInfo | None = None) -> list[Problem]:
    """What ``patina config validate`` adds to the schema check: the pre-flight checks that need no dataset
    (sample prompts, folders, names, free space), required paths that are still empty, and, as warnings, what
    this machine cannot run (the config may be meant for another one)."""
    out: list[Problem] = []
    for param in missing_required(cfg):
        out.append(Problem(param.key, f"is empty; {param.required} is required to train (the config can still be "
                           "saved)", None, "warning"))
    out += preflight(cfg, family=str(cfg.get("model_family") or "auto"))
    if device is not None:
        for p in check_device(cfg, device):
            if p.key == "device":
                continue
            out.append(Problem(p.key, "on this machine: " + p.message, p.value, "warning", fix=p.fix))
    return out


def set_hint(p: Problem) -> str:
    """``--set key=value`` that applies the problem's fix (empty when it has none)."""
    if not p.fix:
        return ""
    return " ".join(f"--set {k}={v}" for k, v in p.fix.items())


def describe(p: Problem, *, cli: bool = True) -> str:
    text = str(p) if p.key not in ("device", "vram") else p.message
    hint = set_hint(p) if cli else ""
    return f"{text} ({hint})" if hint else text


def refuse_if_errors(problems: list[Problem], *, what: str = "The run cannot start") -> None:
    errs = [p for p in problems if p.severity == "error"]
    if errs:
        raise PatinaError(f"{what}: {len(errs)} problem(s) found before training, nothing was changed:",
                          problems=[describe(p) for p in errs])


def os_error_text(exc: OSError, path: str | os.PathLike | None = None, doing: str = "write") -> str:
    """One sentence for a file-system error: the path, what happened, and what to do."""
    where = str(path if path is not None else (exc.filename or "the file"))
    code = exc.errno
    if code == errno.EISDIR:
        return f"{where} is a folder; give a file name instead (e.g. {Path(where) / 'config.json'})."
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: a part of this path is a file, not a folder; choose another path."
    if code == errno.ENOENT:
        parent = Path(where).parent
        if doing == "write" and parent.is_dir():
            return f"Cannot {doing} {where}: a file cannot be created in {parent}; choose another folder."
        if doing == "write":
            return f"Cannot {doing} {where}: the folder {parent} does not exist; create it first or choose another."
        return f"{where} does not exist; check the path."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"Cannot {doing} {where}: permission denied (read-only folder or file); choose a place you can "
                f"{doing}, or change its permissions.")
    if code == errno.ENAMETOOLONG:
        return f"Cannot {doing} {where}: the name is too long for the file system; choose a shorter name."
    if code == errno.ENOSPC:
        return f"Cannot {doing} {where}: the disk is full; free some space or choose another disk."
    return f"Cannot {doing} {where}: {exc.strerror or exc}."
