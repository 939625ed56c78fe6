"""Saving and loading training configs and presets, and kohya_ss JSON interop.

File format: pretty JSON, flat like kohya_ss's, with ``schema_version`` first and the parameters in
schema order. Loading is "reset to defaults, then apply": a key the file does not set takes its
default, never a leftover from a previous load. Every invalid value is reported with its key, value
and what is allowed; unknown keys are reported back; older schema versions go through
:data:`MIGRATIONS`.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from patina.core import __version__
from patina.core.atomic import atomic_write_text
from patina.core.errors import PatinaError
from patina.core.config.schema import (BUCKET_STEP_MIN, BY_KEY, CAPTION_EXTENSION_SUGGESTIONS, LOKR_FULL_DIM, PARAMS,
                                      SCHEMA_VERSION, Problem, ValueProblem, check_values, coerce, defaults, errors,
                                      non_default, parse_text)
from patina.core.config.kohya_keys import changes_nothing, ignored_by_type, lycoris_notes, why_not_carried
from patina.core.paths import resources_dir, user_presets_dir

# Keys in a Patina file that are not parameters.
META_KEYS = ("schema_version", "app", "preset_name", "preset_description")

# MIGRATIONS[n] turns a version-n dict into a version-(n+1) dict. Add one function per schema change
# that renames, removes or re-interprets a key; adding a key with a default needs none.
def _v1_to_v2(data: dict) -> dict:
    """Version 2 dropped two data-loader settings that nothing read (images are loaded in the training loop)."""
    return {k: v for k, v in data.items() if k not in ("max_data_loader_n_workers", "persistent_data_loader_workers")}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


@dataclass
class LoadResult:
    """What reading a config gave: the complete values plus everything the caller should tell the user."""

    values: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)       # keys that are not Patina parameters
    missing: list[str] = field(default_factory=list)       # parameters the file did not set (took defaults)
    source_version: int | None = None
    kohya: bool = False                                    # the file was a kohya_ss config, imported
    notes: list[str] = field(default_factory=list)         # import notes (what was mapped and how)
    unsupported_set: dict[str, Any] = field(default_factory=dict)  # kohya keys with a value Patina ignores
    no_effect: list[str] = field(default_factory=list)     # kohya keys kohya_ss ignores for this LoRA type too
    source: dict[str, Any] = field(default_factory=dict)   # the kohya_ss file's values (for the report)

    @property
    def errors(self) -> list[Problem]:
        return errors(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


# --- reading ---------------------------------------------------------------------------------------

def _read_json(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise PatinaError(f"{p} is a folder, not a config file. Give the path of a .json config inside it.")
    if not p.is_file():
        raise PatinaError(f"Config file not found: {p}. Check the path, or create one with `patina config new`.")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PatinaError(f"{p} is not a UTF-8 text file, so it cannot be a config JSON.") from None
    except OSError as exc:
        from patina.core.train.preflight import os_error_text

        raise PatinaError(os_error_text(exc, p, "read")) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PatinaError(f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
                          "Fix the file in a text editor or load another one.") from None
    if not isinstance(data, dict):
        raise PatinaError(f"{p} holds JSON but not a config: expected an object {{\"key\": value, ...}}.")
    return data


_KOHYA_MARKERS = ("LoRA_type", "save_model_as", "model_list", "additional_parameters", "use_8bit_adam",
                  "LyCORIS_preset", "save_as_bool", "lora_network_weights")


def looks_like_kohya(data: Mapping[str, Any]) -> bool:
    """A kohya_ss config, to be imported: no ``schema_version``, at least one key kohya_ss writes (``LoRA_type``,
    ``save_model_as``…), and no key only Patina writes (``model_family``, ``sample_at_first``, ``app``, preset
    names…). A hand-written Patina file without ``schema_version`` keeps its Patina-only settings that way; a
    file with only shared keys reads the same either way, as the importer maps those keys by name."""
    if "schema_version" in data or not any(k in data for k in _KOHYA_MARKERS):
        return False
    patina_only = [k for k in data if k in META_KEYS or (k in BY_KEY and not BY_KEY[k].kohya)]
    return not patina_only


def migrate(data: dict, *, source: str = "config") -> tuple[dict, int]:
    """Bring a Patina dict up to :data:`SCHEMA_VERSION` through the migration chain."""
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PatinaError(f"{source}: schema_version {version!r} is not valid; it must be a whole number ≥ 1.")
    if version > SCHEMA_VERSION:
        raise PatinaError(f"{source} was written by a newer Patina (schema {version}; this one reads up to "
                          f"{SCHEMA_VERSION}). Update Patina to open it.")
    start = version
    data = dict(data)
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:  # pragma: no cover - a schema bump without its migration is a bug
            raise AssertionError(f"no migration from schema {version}")
        data = step(data)
        version += 1
        data["schema_version"] = version
    return data, start


def config_from_dict(data: Mapping[str, Any], *, source: str = "config") -> LoadResult:
    """Validate a Patina dict (any supported schema version) into a complete config."""
    if looks_like_kohya(data):
        return import_kohya(data)
    migrated, start = migrate(dict(data), source=source)
    values, problems = check_values(migrated)
    unknown = [k for k in migrated if k not in BY_KEY and k not in META_KEYS]
    missing = [p.key for p in PARAMS if p.key not in migrated]
    return LoadResult(values=values, problems=problems, unknown=unknown, missing=missing, source_version=start)


def read_config(path: str | Path) -> LoadResult:
    """Read a Patina config or preset, or a kohya_ss config (imported on the fly).

    Raises :class:`PatinaError` only when the file cannot be read as a JSON object; field problems are
    returned in the result so that the caller can show all of them."""
    return config_from_dict(_read_json(path), source=str(path))


def load_config(path: str | Path) -> LoadResult:
    """Like :func:`read_config` but refuse a config with errors, listing every one."""
    result = read_config(path)
    if result.errors:
        raise PatinaError(f"{path} has {len(result.errors)} invalid setting(s); fix them and try again:",
                          problems=[str(p) for p in result.errors])
    return result


def config_to_dict(cfg: Mapping[str, Any], *, sparse: bool = False, preset_only: bool = False) -> dict:
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "app": f"patina {__version__}"}
    chosen = non_default(cfg, preset_only=preset_only) if sparse else {p.key: cfg[p.key] for p in PARAMS if p.key in cfg}
    for p in PARAMS:  # schema order
        if p.key in chosen:
            out[p.key] = chosen[p.key]
    return out


def write_text_file(path: str | Path, text: str) -> None:
    """Atomic write (missing folders are created) with one clear message for the file-system mistakes: a
    folder given as the file, a folder that cannot be created, a read-only folder, a name too long, a full
    disk."""
    from patina.core.train.preflight import os_error_text

    p = Path(path)
    if p.is_dir():
        raise PatinaError(f"{p} is a folder; give a file name instead (e.g. {p / 'config.json'}).")
    try:
        atomic_write_text(p, text)
    except OSError as exc:
        raise PatinaError(os_error_text(exc, p, "write")) from None


def save_config(path: str | Path, cfg: Mapping[str, Any], *, sparse: bool = False) -> Path:
    """Write *cfg* as pretty JSON, atomically (temp file + rename)."""
    path = Path(path)
    text = json.dumps(config_to_dict(cfg, sparse=sparse), indent=2, ensure_ascii=False) + "\n"
    write_text_file(path, text)
    return path


# --- CLI --set ---------------------------------------------------------------------------------------

def apply_overrides(cfg: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` texts (``patina train --set``). Every bad one is reported together."""
    problems: list[str] = []
    out = dict(cfg)
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            problems.append(f"{item!r}: write it as key=value, e.g. train_batch_size=2")
            continue
        param = BY_KEY.get(key)
        if param is None:
            close = difflib.get_close_matches(key, list(BY_KEY), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{key}: not a Patina parameter{hint}")
            continue
        try:
            out[key] = parse_text(param, text)
        except ValueProblem as exc:
            problems.append(f"{key} = {text!r}: {exc}")
    if problems:
        raise PatinaError("Some --set values are not valid:", problems=problems)
    return out


# --- presets -------------------------------------------------------------------------------------------

@dataclass
class PresetInfo:
    name: str
    path: Path
    builtin: bool
    description: str = ""


def builtin_presets_dir() -> Path:
    return resources_dir() / "presets"


def _preset_info(path: Path, builtin: bool) -> PresetInfo:
    name, desc = path.stem, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        name = data.get("preset_name") or name
        desc = data.get("preset_description") or ""
    except (OSError, ValueError):
        pass
    return PresetInfo(name=name, path=path, builtin=builtin, description=desc)


def list_presets() -> list[PresetInfo]:
    """Built-in presets first (sorted), then the user's."""
    out = [_preset_info(p, True) for p in sorted(builtin_presets_dir().glob("*.json"))]
    udir = user_presets_dir()
    if udir.is_dir():
        out += [_preset_info(p, False) for p in sorted(udir.glob("*.json"))]
    return out


def find_preset(name: str) -> PresetInfo:
    presets = list_presets()
    for p in presets:
        if name in (p.name, p.path.stem, p.path.name):
            return p
    for p in presets:
        if name.lower() in (p.name.lower(), p.path.stem.lower()):
            return p
    names = ", ".join(f'"{p.name}"' for p in presets)
    raise PatinaError(f'No preset named "{name}". Available presets: {names}.')


def apply_preset(current: Mapping[str, Any], preset_path: str | Path) -> LoadResult:
    """Reset to defaults, keep the current machine-specific fields (paths, names, prompts), then apply the
    preset's keys. The result's ``missing`` is not meaningful for sparse presets and is left empty."""
    result = read_config(preset_path)
    data = _read_json(preset_path)
    cfg = defaults()
    for p in PARAMS:
        if not p.preset and p.key in current:
            cfg[p.key] = current[p.key]
    for key in data:
        if key in BY_KEY and not any(pr.key == key and pr.severity == "error" for pr in result.problems):
            cfg[key] = result.values[key]
    result.values = cfg
    result.missing = []
    return result


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip().strip(".")
    if not cleaned:
        raise PatinaError("A preset needs a name made of letters, digits or spaces.")
    return cleaned


def save_user_preset(name: str, cfg: Mapping[str, Any], description: str = "") -> Path:
    """Save the preset-worthy settings that differ from the defaults (no paths) as a user preset."""
    path = user_presets_dir() / f"{_safe_filename(name)}.json"
    data = config_to_dict(cfg, sparse=True, preset_only=True)
    data = {"schema_version": data.pop("schema_version"), "preset_name": name,
            "preset_description": description, **{k: v for k, v in data.items() if k != "app"}}
    write_text_file(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


# --- kohya_ss interop --------------------------------------------------------------------------------

# kohya keys Patina reads under another name or meaning, handled in import_kohya.
_KOHYA_HANDLED = {"v2", "sdxl", "use_8bit_adam", "lora_network_weights", "save_model_as", "mem_eff_attn",
                  "sdxl_cache_text_encoder_outputs", "model_list", "save_as_bool", "additional_parameters"}

_KOHYA_LOCON = {"kohya locon", "locon", "lycoris/locon"}
# kohya_ss's LyCORIS types Patina trains (sd-scripts' own networks.loha/lokr write the same tensor names)
_KOHYA_LYCORIS = {"lycoris/loha": "LyCORIS/LoHa", "lycoris/lokr": "LyCORIS/LoKr", "kohya loha": "LyCORIS/LoHa",
                  "kohya lokr": "LyCORIS/LoKr"}


# kohya_ss's switches for model families Patina does not train
_OTHER_FAMILIES = {"flux1_checkbox": "Flux.1", "sd3_checkbox": "SD3"}
REFUSED_TYPE_PREFIX = "Patina does not train "


def refused_type_message(what: str) -> str:
    return f"{REFUSED_TYPE_PREFIX}{what} networks; it trains Standard LoRA, LoCon, LyCORIS LoHa and LyCORIS LoKr"


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "on")
    return bool(v)


def _number(v: Any) -> float:
    """A kohya number (a JSON number or numeric text), or 0 when it is not one."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _not_for_patina_type(key: str, src_type: str, patina_type: str | None) -> bool:
    """A Patina setting that the imported type cannot carry: LyCORIS's Tucker decomposition (Patina trains none)
    and rank/module dropout outside LoHa/LoKr (kohya's own LoRA has them; Patina's has network_dropout)."""
    if key == "use_tucker":
        return src_type.startswith("LyCORIS/")
    return key in ("rank_dropout", "module_dropout") and patina_type not in ("LyCORIS/LoHa", "LyCORIS/LoKr")


def import_kohya(data: Mapping[str, Any]) -> LoadResult:
    """Map a kohya_ss LoRA JSON onto Patina's schema.

    Handles kohya's legacy spellings (``use_8bit_adam``, ``lora_network_weights``, ``LoRA_type: "LoCon"``,
    boolean ``xformers``) and string-typed numbers, like kohya's own loader does, but never keeps values
    from a previous load: anything the file does not set takes Patina's default."""
    src = dict(data)
    notes: list[str] = []
    problems: list[Problem] = []
    raw: dict[str, Any] = {}

    # Legacy spellings first.
    if "optimizer" not in src and "use_8bit_adam" in src:
        raw["optimizer"] = "AdamW8bit" if _truthy(src["use_8bit_adam"]) else "AdamW"
        notes.append(f"use_8bit_adam → optimizer = {raw['optimizer']}")
    if not src.get("network_weights") and src.get("lora_network_weights"):
        raw["network_weights"] = src["lora_network_weights"]
        notes.append("lora_network_weights → network_weights")
    if _truthy(src.get("sdxl")):
        raw["model_family"] = "sdxl"
    elif _truthy(src.get("v2")):
        raw["model_family"] = "sd2"
    src_type = str(src.get("LoRA_type") or "Standard").strip()
    src_type = "LyCORIS/LoCon" if src_type.lower() == "locon" else src_type  # kohya_ss's older name
    if "LoRA_type" in src:
        lt = str(src["LoRA_type"]).strip()
        if lt.lower() == "standard":
            raw["LoRA_type"] = "Standard"
        elif lt.lower() in _KOHYA_LOCON:
            raw["LoRA_type"] = "Kohya LoCon"
            if lt != "Kohya LoCon":
                notes.append(f'LoRA_type "{lt}" → "Kohya LoCon" (same LoCon file format)')
        elif lt.lower() in _KOHYA_LYCORIS:
            raw["LoRA_type"] = _KOHYA_LYCORIS[lt.lower()]
            if lt != raw["LoRA_type"]:
                notes.append(f'LoRA_type "{lt}" → "{raw["LoRA_type"]}" (the same LyCORIS tensor layout)')
        else:
            problems.append(Problem("LoRA_type", refused_type_message(lt), lt))
            src.pop("LoRA_type")
    for flag, family in _OTHER_FAMILIES.items():
        if _truthy(src.get(flag)):
            problems.append(Problem(flag, refused_type_message(family), True))
    if raw.get("LoRA_type") == "LyCORIS/LoKr":
        for key in ("network_dim", "conv_dim"):
            if _number(src.get(key)) >= LOKR_FULL_DIM:
                notes.append(f"{key} {src[key]}: LyCORIS's full-matrix LoKr (Kronecker factors not decomposed), "
                             "trained and saved the same way")
    notes += lycoris_notes(src, src_type)
    if "xformers" in src:
        xf = src["xformers"]
        if isinstance(xf, bool) or (isinstance(xf, str) and xf.strip().lower() in ("true", "false")):
            raw["xformers"] = "xformers" if _truthy(xf) else "sdpa"
            notes.append(f"xformers = {xf!r} → {raw['xformers']!r}")
        elif isinstance(xf, str) and xf.strip().lower() == "none":
            raw["xformers"] = "sdpa"
            notes.append('xformers "none" → "sdpa" (PyTorch\'s built-in memory-efficient attention)')
        else:
            raw["xformers"] = xf
    if _truthy(src.get("mem_eff_attn")):
        notes.append("mem_eff_attn is replaced by PyTorch SDPA attention (the xformers setting)")
    sma = src.get("save_model_as")
    if sma not in (None, "", "safetensors"):
        notes.append(f'save_model_as "{sma}" → safetensors (Patina writes LoRAs only as .safetensors)')
    if _truthy(src.get("sdxl_cache_text_encoder_outputs")):
        notes.append("sdxl_cache_text_encoder_outputs: Patina caches text-encoder outputs automatically "
                     "whenever the text encoder is not trained and captions do not change")
    if src.get("additional_parameters"):
        notes.append(f"additional_parameters {src['additional_parameters']!r} were not applied (sd-scripts "
                     "command-line flags); set the matching fields instead")
    if src.get("caption_extension") == "":
        raw["caption_extension"] = ".caption"
        notes.append('caption_extension "" → ".caption" (sd-scripts\' default)')
    elif str(src.get("caption_extension") or ".txt") not in CAPTION_EXTENSION_SUGGESTIONS:
        notes.append(f"caption_extension {src['caption_extension']!r}: images without such a caption file are "
                     "captioned with their folder name, as in kohya_ss")
    step = _number(src.get("bucket_reso_steps"))
    if 0 < step and step % BUCKET_STEP_MIN:
        raw["bucket_reso_steps"] = max(BUCKET_STEP_MIN, int(step) // BUCKET_STEP_MIN * BUCKET_STEP_MIN)
        notes.append(f"bucket_reso_steps {src['bucket_reso_steps']} → {raw['bucket_reso_steps']}: bucket sides "
                     f"are multiples of {BUCKET_STEP_MIN} in Patina: the VAE encodes 8×8 pixel blocks, so kohya_ss's "
                     "latents are those of the next multiple of 8 below anyway")
    if "clip_skip" in src and str(src["clip_skip"]).strip() in ("0", "0.0"):
        raw["clip_skip"] = 1
    if src.get("mixed_precision") == "fp8":
        problems.append(Problem("mixed_precision", "fp8 is not a training precision (sd-scripts rejects it too); "
                                "use fp16 or bf16", "fp8"))
        src.pop("mixed_precision")
    model = str(src.get("pretrained_model_name_or_path") or "")
    if model and not (Path(model).exists() or model.startswith((".", "/", "~")) or re.match(r"^[A-Za-z]:[\\/]", model)):
        notes.append(f'pretrained_model_name_or_path "{model}" looks like a Hugging Face id; Patina never downloads '
                     "models: choose the downloaded .safetensors file or diffusers folder instead")

    # Every other key by its own name.
    unsupported: dict[str, Any] = {}
    no_effect: list[str] = []
    for key, value in src.items():
        if key in raw or key in _KOHYA_HANDLED:
            continue
        param = BY_KEY.get(key)
        if param is None or not param.kohya or _not_for_patina_type(key, src_type, raw.get("LoRA_type")):
            if changes_nothing(key, value):
                continue
            if ignored_by_type(key, src_type):
                no_effect.append(key)
            else:
                unsupported[key] = value
            continue
        if isinstance(value, str) and param.type in ("int", "float", "bool") or (
                param.type == "choice" and isinstance(value, str) and param.choices and isinstance(param.choices[0], int)):
            if value.strip() == "":
                continue  # kohya's "empty" means its default
            try:
                raw[key] = parse_text(param, value)
            except ValueProblem as exc:
                problems.append(Problem(key, str(exc), value))
            continue
        if value is None:
            continue
        raw[key] = value

    values = defaults()
    for key, value in raw.items():
        try:
            values[key] = coerce(BY_KEY[key], value)
        except ValueProblem as exc:
            problems.append(Problem(key, str(exc), value))
    from patina.core.config.schema import cross_check
    problems.extend(cross_check(values))
    all_unknown = [k for k in src if k not in BY_KEY and k not in _KOHYA_HANDLED]
    return LoadResult(values=values, problems=problems, unknown=sorted(all_unknown),
                      missing=[p.key for p in PARAMS if p.key not in raw and p.key not in src],
                      source_version=None, kohya=True, notes=notes, unsupported_set=unsupported,
                      no_effect=no_effect, source=dict(src))


_SAMPLER_TO_KOHYA = {"k_dpmsolver++": "dpmsolver++"}


def export_kohya(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A kohya_ss-loadable JSON dict for *cfg*, and notes on what kohya cannot express exactly."""
    notes: list[str] = []
    out: dict[str, Any] = {}
    for p in PARAMS:
        if p.kohya:
            out[p.key] = cfg[p.key]
    fam = cfg["model_family"]
    out["v2"] = fam == "sd2"
    out["sdxl"] = fam == "sdxl"
    if fam == "auto":
        notes.append("model family is 'detect from file': tick v2/SDXL in kohya_ss if the model needs it")
    out["save_model_as"] = "safetensors"
    out["model_list"] = "custom"
    if cfg["sample_sampler"] in _SAMPLER_TO_KOHYA:
        out["sample_sampler"] = _SAMPLER_TO_KOHYA[cfg["sample_sampler"]]
        notes.append(f"sample_sampler {cfg['sample_sampler']} → {out['sample_sampler']} (kohya has no Karras variant)")
    extra = []
    if cfg["sample_at_first"]:
        extra.append("--sample_at_first")
    if cfg["caption_tag_dropout_rate"]:
        extra.append(f"--caption_tag_dropout_rate={cfg['caption_tag_dropout_rate']}")
    out["additional_parameters"] = " ".join(extra)
    if cfg["sample_every_n_steps"] and cfg["sample_every_n_epochs"]:
        notes.append("kohya_ss ignores sample_every_n_steps when sample_every_n_epochs is set")
    return dict(sorted(out.items())), notes


def write_kohya(path: str | Path, cfg: Mapping[str, Any]) -> list[str]:
    data, notes = export_kohya(cfg)
    write_text_file(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return notes


def _not_carried(result: LoadResult) -> list[str]:
    return [f"{k} = {v!r}: {why_not_carried(k, v, result.source)}" for k, v in sorted(result.unsupported_set.items())]


def _no_effect(result: LoadResult) -> str:
    return f"No effect for this LoRA type in kohya_ss either, skipped: {', '.join(sorted(result.no_effect))}"


def import_notes(result: LoadResult) -> list[str]:
    """Everything a kohya_ss import should tell beside errors, one line each: the mapping notes, warnings,
    each setting not carried over with what it would have changed, and the settings without effect."""
    lines = list(result.notes) + [f"warning: {p}" for p in result.warnings]
    lines += [f"not carried over: {line}" for line in _not_carried(result)]
    return lines + ([_no_effect(result)] if result.no_effect else [])


def format_load_report(result: LoadResult, source: str = "") -> str:
    """Readable text listing every problem, unknown key and import note."""
    lines: list[str] = []
    head = f"{source}: " if source else ""
    if result.kohya:
        lines.append(f"{head}kohya_ss config imported.")
    for note in result.notes:
        lines.append(f"  note: {note}")
    errs, warns = result.errors, result.warnings
    if errs:
        lines.append(f"{head}{len(errs)} invalid setting(s):")
        lines += [f"  error: {p}" for p in errs]
    if warns:
        lines += [f"  warning: {p}" for p in warns]
    if result.kohya:
        if result.unsupported_set:
            lines.append(f"  Not carried over ({len(result.unsupported_set)} kohya setting(s) Patina does not support):")
            lines += [f"    {line}" for line in _not_carried(result)]
        if result.no_effect:
            lines.append(f"  {_no_effect(result)}")
        reported = set(result.unsupported_set) | set(result.no_effect)
        rest = len([k for k in result.unknown if k not in reported])
        if rest > 0:
            lines.append(f"  {rest} other kohya key(s) Patina does not use were empty or off and were skipped.")
    elif result.unknown:
        described = []
        for key in result.unknown:
            close = difflib.get_close_matches(key, list(BY_KEY), n=2, cutoff=0.6)
            described.append(f"{key} (did you mean {' or '.join(close)}?)" if close else key)
        lines.append(f"  unknown key(s), ignored: {', '.join(described)}")
    if not errs and not result.kohya:
        lines.insert(0, f"{head}OK ({len(PARAMS) - len(result.missing)} settings from the file, "
                        f"{len(result.missing)} at their defaults).")
    return "\n".join(lines)
