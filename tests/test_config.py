"""The parameter schema, config save/load, presets and kohya_ss interop."""

import json

import pytest

from patina.core.config import files as cfgmod
from patina.core.config import schema as params
from patina.core.cli import main as cli
from patina.core.errors import PatinaError
from patina.core.config.schema import BY_KEY, PARAMS, defaults


def write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- schema ---------------------------------------------------------------------------------------

def test_every_param_is_complete_and_its_default_is_valid():
    pages = {p for p, _ in params.PAGES}
    for p in PARAMS:
        assert p.label and p.help, p.key
        assert p.page in pages, p.key
        assert params.coerce(p, p.default) == p.default, p.key
        if p.type == "choice":
            assert p.default in p.choices


def test_kohya_key_names_are_used():
    for key in ("network_dim", "network_alpha", "learning_rate", "unet_lr", "text_encoder_lr", "train_batch_size",
                "epoch", "max_train_steps", "max_resolution", "optimizer", "lr_scheduler", "lr_warmup",
                "cache_latents", "sample_prompts", "conv_dim", "conv_alpha", "LoRA_type", "save_every_n_epochs"):
        assert BY_KEY[key].kohya


def test_relevance_rules():
    cfg = defaults()
    assert not BY_KEY["conv_dim"].is_visible(cfg)
    cfg["LoRA_type"] = "Kohya LoCon"
    assert BY_KEY["conv_dim"].is_visible(cfg)
    cfg["lr_scheduler"] = "constant"
    assert not BY_KEY["lr_warmup"].is_enabled(cfg)
    cfg["model_family"] = "sd1"
    assert not BY_KEY["sdxl_no_half_vae"].is_visible(cfg)
    cfg["model_family"] = "auto"
    cfg["_detected_family"] = "sdxl"
    assert BY_KEY["sdxl_no_half_vae"].is_visible(cfg)


def test_coerce_is_strict_and_messages_say_what_is_allowed():
    with pytest.raises(params.ValueProblem, match="whole number from 1 to 64"):
        params.coerce(BY_KEY["train_batch_size"], 0)
    with pytest.raises(params.ValueProblem, match="whole number"):
        params.coerce(BY_KEY["network_dim"], "16")
    with pytest.raises(params.ValueProblem, match="true or false"):
        params.coerce(BY_KEY["cache_latents"], 1)
    with pytest.raises(params.ValueProblem, match="one of"):
        params.coerce(BY_KEY["optimizer"], "AdamWW")
    assert params.coerce(BY_KEY["network_dim"], 16.0) == 16
    assert params.coerce(BY_KEY["max_resolution"], "768x512") == "768,512"
    with pytest.raises(params.ValueProblem, match="W,H"):
        params.coerce(BY_KEY["max_resolution"], "big")
    with pytest.raises(params.ValueProblem, match="key=value"):
        params.coerce(BY_KEY["optimizer_args"], "weight_decay 0.1")


def test_cross_field_checks():
    cfg = defaults()
    cfg.update(unet_lr=0.0, text_encoder_lr=0.0, min_bucket_reso=1024, max_bucket_reso=512)
    probs = params.cross_check(cfg)
    keys = {p.key for p in params.errors(probs)}
    assert keys == {"unet_lr", "min_bucket_reso"}


# --- save / load -----------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    cfg = defaults()
    cfg.update(network_dim=32, LoRA_type="Kohya LoCon", conv_dim=8, sample_prompts="a dog --w 512\nsecond line",
               max_token_length=150, mixed_precision="bf16", train_data_dir=str(tmp_path / "img"))
    path = cfgmod.save_config(tmp_path / "a.json", cfg)
    data = json.loads(path.read_text())
    assert data["schema_version"] == params.SCHEMA_VERSION
    assert list(data)[0] == "schema_version"
    back = cfgmod.load_config(path)
    assert back.values == cfg
    assert back.unknown == [] and back.missing == []


def test_missing_keys_take_defaults_never_leftovers(tmp_path):
    full = defaults()
    full.update(network_dim=64, epoch=20)
    cfgmod.save_config(tmp_path / "full.json", full)
    first = cfgmod.load_config(tmp_path / "full.json").values
    assert first["network_dim"] == 64
    sparse = write(tmp_path / "sparse.json", {"schema_version": 1, "epoch": 3})
    res = cfgmod.load_config(sparse)
    assert res.values["epoch"] == 3
    assert res.values["network_dim"] == BY_KEY["network_dim"].default
    assert "network_dim" in res.missing and "epoch" not in res.missing


def test_preset_with_invalid_value_and_unknown_key_reports_all(tmp_path):
    path = write(tmp_path / "bad.json", {"schema_version": 1, "network_dim": 9999, "optimizer": "Adamm",
                                         "learning_rate": "fast", "my_custom_thing": 3, "epoch": 4})
    res = cfgmod.read_config(path)
    bad = {p.key: p for p in res.errors}
    assert set(bad) == {"network_dim", "optimizer", "learning_rate"}
    assert "use 1–512" in bad["network_dim"].message and bad["network_dim"].value == 9999
    assert "one of" in bad["optimizer"].message
    assert res.unknown == ["my_custom_thing"]
    assert res.values["epoch"] == 4  # the valid keys are still applied
    with pytest.raises(PatinaError) as exc:
        cfgmod.load_config(path)
    assert len(exc.value.problems) == 3


def test_unreadable_files_give_clear_messages(tmp_path):
    with pytest.raises(PatinaError, match="not found"):
        cfgmod.read_config(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(PatinaError, match="not valid JSON .line 1"):
        cfgmod.read_config(tmp_path / "broken.json")
    write(tmp_path / "list.json", [1, 2])
    with pytest.raises(PatinaError, match="expected an object"):
        cfgmod.read_config(tmp_path / "list.json")
    write(tmp_path / "future.json", {"schema_version": 99})
    with pytest.raises(PatinaError, match="newer Patina"):
        cfgmod.read_config(tmp_path / "future.json")


def test_older_schema_versions_go_through_migrations(tmp_path, monkeypatch):
    # Pretend the schema is at version 2 and version 1 called the rank "rank".
    def v1_to_v2(data):
        data = dict(data)
        if "rank" in data:
            data["network_dim"] = data.pop("rank")
        return data

    monkeypatch.setattr(cfgmod, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(cfgmod, "MIGRATIONS", {1: v1_to_v2})
    res = cfgmod.read_config(write(tmp_path / "old.json", {"schema_version": 1, "rank": 24}))
    assert res.source_version == 1
    assert res.values["network_dim"] == 24 and res.unknown == []


def test_save_is_atomic(tmp_path, monkeypatch):
    path = cfgmod.save_config(tmp_path / "keep.json", defaults())
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("patina.core.atomic.os.replace", boom)
    cfg = defaults()
    cfg["epoch"] = 7
    with pytest.raises(PatinaError, match="keep.json"):  # one message naming the file, not a bare OSError
        cfgmod.save_config(path, cfg)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]  # no temp file left behind


# --- --set ---------------------------------------------------------------------------------------------

def test_apply_overrides_parses_text_and_reports_all_problems():
    cfg = cfgmod.apply_overrides(defaults(), ["train_batch_size=4", "cache_latents=no", "learning_rate=5e-5",
                                              "max_token_length=225", "max_resolution=768,768"])
    assert cfg["train_batch_size"] == 4 and cfg["cache_latents"] is False
    assert cfg["learning_rate"] == 5e-5 and cfg["max_token_length"] == 225 and cfg["max_resolution"] == "768,768"
    with pytest.raises(PatinaError) as exc:
        cfgmod.apply_overrides(defaults(), ["network_dims=4", "epoch=0", "oops"])
    text = "\n".join(exc.value.problems)
    assert "did you mean network_dim" in text and "epoch = '0'" in text and "key=value" in text


# --- presets -----------------------------------------------------------------------------------------

def test_builtin_presets_are_sparse_valid_and_complete():
    presets = [p for p in cfgmod.list_presets() if p.builtin]
    names = {p.name for p in presets}
    assert {"SD1.5 character/object", "SD1.5 style", "SDXL character", "SD1.5 for 6–8 GB cards",
            "SDXL for 12 GB cards"} <= names
    for p in presets:
        data = json.loads(p.path.read_text(encoding="utf-8"))
        res = cfgmod.read_config(p.path)
        assert res.ok and not res.unknown, (p.name, res.problems, res.unknown)
        assert len(data) < len(PARAMS) / 2  # sparse
        assert not any(k in data for k in ("train_data_dir", "output_dir", "pretrained_model_name_or_path"))


def test_apply_preset_resets_then_applies_and_keeps_paths(tmp_path):
    current = defaults()
    current.update(train_data_dir="/data/img", output_dir="/data/out", network_dim=128, flip_aug=True)
    res = cfgmod.apply_preset(current, cfgmod.find_preset("SDXL character").path)
    v = res.values
    assert v["train_data_dir"] == "/data/img" and v["output_dir"] == "/data/out"
    assert v["network_dim"] == 16 and v["model_family"] == "sdxl"
    assert v["flip_aug"] is False  # not in the preset: back to default, not kept from before


def test_user_presets(tmp_path):
    cfg = defaults()
    cfg.update(network_dim=48, train_data_dir="/secret/path")
    path = cfgmod.save_user_preset("My: style", cfg, "mine")
    assert path.name == "My_ style.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["network_dim"] == 48 and "train_data_dir" not in data
    found = cfgmod.find_preset("My: style")
    assert not found.builtin and found.description == "mine"
    with pytest.raises(PatinaError, match="No preset named"):
        cfgmod.find_preset("nope")


# --- kohya interop ---------------------------------------------------------------------------------

KOHYA_LEGACY = {
    "LoRA_type": "LoCon", "use_8bit_adam": True, "lora_network_weights": "/old/lora.safetensors",
    "xformers": True, "network_dim": "32", "network_alpha": "16", "epoch": "10", "train_batch_size": "2",
    "learning_rate": "0.0001", "unet_lr": "0.0002", "text_encoder_lr": "5e-5", "clip_skip": "2",
    "max_token_length": "150", "max_resolution": "768,768", "conv_dim": "8", "conv_alpha": "4",
    "lr_scheduler": "constant", "lr_warmup": "0", "seed": "", "cache_latents": True, "v2": False, "sdxl": True,
    "save_model_as": "ckpt", "stop_text_encoder_training": 0, "LyCORIS_preset": "attn-only", "rank_dropout": 0.1,
    "save_as_bool": False, "model_list": "custom", "use_wandb": "", "caption_extension": ".txt",
    "mixed_precision": "bf16", "shuffle_caption": "True",
}


def test_import_kohya_maps_legacy_keys_and_string_numbers():
    res = cfgmod.import_kohya(KOHYA_LEGACY)
    v = res.values
    assert res.kohya and res.ok, res.problems
    assert v["LoRA_type"] == "Kohya LoCon" and v["optimizer"] == "AdamW8bit"
    assert v["network_weights"] == "/old/lora.safetensors" and v["xformers"] == "xformers"
    assert (v["network_dim"], v["network_alpha"], v["epoch"], v["train_batch_size"]) == (32, 16.0, 10, 2)
    assert (v["unet_lr"], v["text_encoder_lr"], v["clip_skip"]) == (0.0002, 5e-5, 2)
    assert v["max_token_length"] == 150 and v["conv_dim"] == 8 and v["model_family"] == "sdxl"
    assert v["seed"] == 0 and v["shuffle_caption"] is True and v["mixed_precision"] == "bf16"
    assert "rank_dropout" in res.unsupported_set and "LyCORIS_preset" in res.unsupported_set
    assert "stop_text_encoder_training" not in res.unsupported_set  # unset values are only counted
    assert any("safetensors" in n for n in res.notes)


def test_import_kohya_reports_bad_values_field_by_field():
    res = cfgmod.import_kohya({"LoRA_type": "LyCORIS/iA3", "network_dim": "many", "optimizer": "AdEMAMix8bit",
                               "mixed_precision": "fp8", "save_model_as": "safetensors"})
    keys = {p.key for p in res.errors}
    assert keys == {"LoRA_type", "network_dim", "optimizer", "mixed_precision"}
    assert res.values["network_dim"] == BY_KEY["network_dim"].default


def test_read_config_imports_kohya_files_on_the_fly(tmp_path):
    res = cfgmod.read_config(write(tmp_path / "k.json", KOHYA_LEGACY))
    assert res.kohya and res.values["network_dim"] == 32


def test_export_then_import_kohya_round_trip(tmp_path):
    cfg = defaults()
    cfg.update(network_dim=24, network_alpha=12.0, LoRA_type="Kohya LoCon", conv_dim=4, model_family="sd2",
               v_parameterization=True, optimizer="Prodigy", max_token_length=225, xformers="xformers",
               sample_prompts="a cat --n blurry", caption_extension=".caption")
    data, notes = cfgmod.export_kohya(cfg)
    assert data["v2"] is True and data["sdxl"] is False and data["save_model_as"] == "safetensors"
    assert list(data) == sorted(data)
    back = cfgmod.import_kohya(data)
    assert back.ok
    for p in PARAMS:
        if p.kohya or p.key == "model_family":
            assert back.values[p.key] == cfg[p.key], p.key


# --- CLI -----------------------------------------------------------------------------------------------

def test_cli_import_kohya_and_validate(tmp_path, capsys):
    src = write(tmp_path / "kohya.json", KOHYA_LEGACY)
    out = tmp_path / "patina.json"
    assert cli(["config", "import-kohya", str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "Not carried over" in text and "rank_dropout" in text and "LyCORIS_preset" in text
    assert cli(["config", "validate", str(out)]) == 0
    assert json.loads(out.read_text())["network_dim"] == 32
    assert cli(["config", "export-kohya", str(out), str(tmp_path / "back.json")]) == 0
    assert json.loads((tmp_path / "back.json").read_text())["LoRA_type"] == "Kohya LoCon"


def test_cli_validate_prints_every_problem_without_traceback(tmp_path, capsys):
    bad = write(tmp_path / "bad.json", {"schema_version": 1, "network_dim": 0, "epoch": -1, "wat": 1})
    assert cli(["config", "validate", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "network_dim = 0" in out and "epoch = -1" in out and "wat" in out
    assert cli(["config", "validate", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_cli_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = write(tmp_path / "k.json", KOHYA_LEGACY)
    assert cli(["config", "import-kohya", str(src), str(src)]) == 2
    assert json.loads(src.read_text()) == KOHYA_LEGACY


def test_sampling_without_prompts_is_a_warning():
    def warnings_for(**over):
        cfg = defaults()
        cfg.update(over)
        _, problems = params.check_values(cfg)
        return [p for p in problems if p.key == "sample_prompts"]

    assert warnings_for() == []  # sampling off by default
    found = warnings_for(sample_every_n_epochs=1, sample_prompts="# only a comment\n\n")
    assert len(found) == 1 and found[0].severity == "warning" and "no sample prompts" in found[0].message
    assert warnings_for(sample_at_first=True, sample_prompts="") != []
    assert warnings_for(sample_every_n_steps=50, sample_prompts="a dog") == []


# --- facts stated once, in the schema --------------------------------------------------------------------

def test_required_settings_input_paths_and_metadata_keys_are_read_from_the_schema(tmp_path):
    from patina.core.lora.kohya_format import build_metadata
    from patina.core.train.engine import validated

    assert params.REQUIRED_TO_START == ("pretrained_model_name_or_path", "train_data_dir", "output_dir")
    assert all(BY_KEY[k].required for k in params.REQUIRED_TO_START)
    # the engine names each empty required setting with the page and label the window shows
    with pytest.raises(PatinaError) as err:
        validated(defaults())
    text = str(err.value)
    for key in params.REQUIRED_TO_START:
        p = BY_KEY[key]
        assert f"{key} ({dict(params.PAGES)[p.page]} ▸ {p.label}): choose {p.required}" in text
    # every input path that is set but missing is a warning naming it; existing or empty ones are not
    cfg = defaults()
    cfg.update({k: str(tmp_path / "nope" / k) for k in params.INPUT_PATHS})
    assert [p.key for p in params.missing_inputs(cfg)] == list(params.INPUT_PATHS)
    assert all(p.severity == "warning" for p in params.missing_inputs(cfg))
    cfg.update({k: str(tmp_path) for k in params.INPUT_PATHS}, vae="")
    assert params.missing_inputs(cfg) == []
    # each setting with an ss_* key is recorded under it in the LoRA file's metadata
    values = defaults()
    md = build_metadata(values=values, family="sd1")
    assert len(params.SS_KEYS) > 40
    for key, ss_key in params.SS_KEYS.items():
        assert ss_key in md, key
    assert md["ss_batch_size_per_device"] == str(values["train_batch_size"])
    assert md["ss_debiased_estimation"] == "False"


def test_choice_labels_are_declared_with_the_choice():
    assert BY_KEY["model_family"].choice_label("auto") == "Detect from file"
    assert BY_KEY["model_family"].choice_label("sdxl") == "SDXL"
    assert BY_KEY["sample_sampler"].choice_label("euler_a") == "Euler a  (euler_a)"
    assert BY_KEY["sample_sampler"].choice_label("ddim") == "ddim"
    for p in PARAMS:
        for choice, _ in p.choice_labels:
            assert choice in p.choices, p.key


def test_loader_settings_that_nothing_read_are_gone(tmp_path):
    gone = ("max_data_loader_n_workers", "persistent_data_loader_workers")
    assert not any(k in BY_KEY for k in gone)
    # an older Patina file that has them loads without reporting them
    old = cfgmod.read_config(write(tmp_path / "old.json", {"schema_version": 1, "epoch": 2,
                                                           "max_data_loader_n_workers": 4,
                                                           "persistent_data_loader_workers": True}))
    assert old.ok and old.unknown == [] and old.values["epoch"] == 2
    # a kohya_ss config still imports; a value that was set is reported as not carried over
    kohya = cfgmod.config_from_dict({"LoRA_type": "Standard", "max_data_loader_n_workers": "4",
                                     "persistent_data_loader_workers": False})
    assert kohya.kohya and kohya.ok
    assert kohya.unsupported_set == {"max_data_loader_n_workers": "4"}
    report = cfgmod.format_load_report(kohya, "kohya.json")
    assert "Not carried over" in report and "max_data_loader_n_workers = '4'" in report


def test_the_cli_checks_a_config_once(tmp_path, monkeypatch, capsys):
    """Reading the file checks it; the settings after --set are checked once more, and the engine takes that
    checked config as it is."""
    from trainkit import make_dataset, tiny_cfg

    from patina.core.models.tiny import save_tiny_diffusers
    from patina.core.train import engine

    model = save_tiny_diffusers(tmp_path / "m", "sd1")
    preset = cfgmod.save_config(tmp_path / "p.json", tiny_cfg(model, make_dataset(tmp_path), tmp_path / "out"))
    calls = []
    real = params.check_values

    def counting(values, **kw):
        calls.append(1)
        return real(values, **kw)

    for module in (params, cfgmod, engine):
        monkeypatch.setattr(module, "check_values", counting)
    assert cli(["train", str(preset), "--set", "epoch=1", "--dry-run"]) == 0, capsys.readouterr().err
    assert "Total steps" in capsys.readouterr().out
    assert len(calls) == 2
    assert isinstance(real(defaults())[0], params.ValidConfig)
    assert not isinstance(real({"network_dim": -1})[0], params.ValidConfig)  # a config with an error is not


def test_facts_are_stated_once_and_no_module_imports_anothers_private_names():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = {p: p.read_text(encoding="utf-8") for d in ("core", "gui") for p in (root / d).rglob("*.py")}
    private = re.compile(r"from patina\.[\w.]+ import \(?[^)\n]*\b_[a-z]\w*")
    offenders = [f"{p.relative_to(root)}: {m.group(0)}" for p, text in sources.items() for m in private.finditer(text)]
    assert offenders == []
    # the model families and what tells them apart: core/models/families.py only
    family_facts = re.compile(r'\("sd1", "sd2", "sdxl"\)|\{768: "sd1"|"sd1": "SD 1\.x"|"sd1": "Stable Diffusion')
    stated = sorted(str(p.relative_to(root)) for p, text in sources.items() if family_facts.search(text))
    assert stated == ["core/models/families.py"]
    # one resolution parser (patina.core.dataset.buckets.parse_resolution), one Sample, one LoadResult
    for name in ("def parse_resolution", "class Sample", "class LoadResult", "def network_args",
                 "def _parse_resolution"):
        where = [str(p.relative_to(root)) for p, text in sources.items() if re.search(rf"^\s*{name}\b", text, re.M)]
        assert len(where) <= 1, (name, where)
