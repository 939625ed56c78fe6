"""kohya_ss's LoRA presets come over: custom caption extensions, bucket step 1, the LyCORIS fields, and a whole
presets folder at once (core, CLI). The configs here are written for the tests with the values kohya_ss's own
presets use; the full-matrix LoKr training run is in test_lycoris.py."""

from __future__ import annotations

import json

import pytest

from patina.core.cli import main as cli
from patina.core.config import files as cfgmod
from patina.core.config.kohya_folder import CLEAN, NOTES, REFUSED, import_kohya_folder
from patina.core.config.schema import check_values, defaults
from patina.core.errors import PatinaError
from trainkit import make_dataset


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# --- 1. caption extensions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".txt-no", ".none-use-foldername", ".txt2", ".tags", ".caption"])
def test_any_caption_extension_that_is_a_file_suffix_is_accepted(ext):
    _, problems = check_values({"caption_extension": ext})
    assert not problems, problems
    res = cfgmod.import_kohya({"LoRA_type": "Standard", "caption_extension": ext})
    assert res.ok and res.values["caption_extension"] == ext


@pytest.mark.parametrize("ext", ["txt", ".", "", "../caps", ".a/b", ".a\\b", ". txt", ".png", ".JPG", ".t*t"])
def test_a_caption_extension_that_is_not_a_file_suffix_is_refused(ext):
    _, problems = check_values({"caption_extension": ext})
    assert [p.key for p in problems] == ["caption_extension"]
    assert "extension" in problems[0].message


def test_no_caption_file_with_the_extension_means_folder_names_in_the_plan(tmp_path):
    from patina.core.dataset.folders import scan_dataset
    from patina.core.dataset.summary import format_summary, summarize

    data = make_dataset(tmp_path, n=3, repeats=2)  # 2_sks toy with .txt captions
    scan = scan_dataset(data, None, ".none-use-foldername", min_size=64)
    assert scan.trainable and not scan.captioned
    assert {img.caption for s in scan.train_subsets for img in s.images} == {"sks toy"}
    text = format_summary(summarize(scan, resolution=(64, 64), min_bucket_reso=64))
    assert "no training image has a .none-use-foldername caption file, so folder names are used as captions " \
           "('sks toy')" in text


# --- 2. bucket_reso_steps ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kohya,patina", [(1, 8), ("1", 8), (12, 8), (64.0, 64), (32, 32)])
def test_bucket_step_imports_as_a_multiple_of_8(kohya, patina):
    res = cfgmod.import_kohya({"LoRA_type": "Standard", "bucket_reso_steps": kohya})
    assert res.ok and res.values["bucket_reso_steps"] == patina
    assert any("VAE encodes 8×8 pixel blocks" in n for n in res.notes) == (patina != kohya)


def test_bucket_step_must_be_a_multiple_of_8_in_a_patina_config():
    _, problems = check_values({"bucket_reso_steps": 12})
    assert [p.key for p in problems] == ["bucket_reso_steps"] and "multiple of 8" in problems[0].message
    _, problems = check_values({"bucket_reso_steps": 1})
    assert [p.key for p in problems] == ["bucket_reso_steps"]


# --- 3/4. LoKr ranks and the LyCORIS fields -------------------------------------------------------------------

def test_rank_above_512_is_for_lokr_only():
    _, problems = check_values(dict(defaults(), LoRA_type="LyCORIS/LoKr", network_dim=100000, conv_dim=100000))
    assert not problems
    for lora_type in ("Standard", "Kohya LoCon", "LyCORIS/LoHa"):
        _, problems = check_values(dict(defaults(), LoRA_type=lora_type, network_dim=100000))
        assert [p.key for p in problems] == ["network_dim"] and "only LoKr" in problems[0].message


LYCORIS_FIELDS = {"use_scalar": True, "train_norm": True, "dora_wd": True, "bypass_mode": True,
                  "use_tucker": True, "LyCORIS_preset": "attn-only"}


@pytest.mark.parametrize("key,value", LYCORIS_FIELDS.items())
def test_each_lycoris_field_not_trained_is_reported_with_its_effect(key, value):
    res = cfgmod.import_kohya({"LoRA_type": "LyCORIS/LoHa", "network_dim": 8, "conv_dim": 4, key: value})
    assert res.ok and res.unsupported_set == {key: value}
    line = next(n for n in cfgmod.import_notes(res) if n.startswith(f"not carried over: {key} ="))
    assert "would" in line  # says what it would have changed


def test_lycoris_fields_patina_honours_are_carried_over():
    src = {"LoRA_type": "LyCORIS/LoKr", "network_dim": 16, "factor": 4, "decompose_both": True,
           "rank_dropout": 0.1, "module_dropout": 0.05, "rank_dropout_scale": True, "conv_block_dims": "",
           "down_lr_weight": "", "network_dropout": 0}
    res = cfgmod.import_kohya(src)
    assert res.ok and not res.unsupported_set
    assert {k: res.values[k] for k in ("factor", "decompose_both", "rank_dropout", "module_dropout",
                                        "rank_dropout_scale")} == {"factor": 4, "decompose_both": True,
                                                                   "rank_dropout": 0.1, "module_dropout": 0.05,
                                                                   "rank_dropout_scale": True}
    from patina.core.lora.targets import NetworkSpec

    spec = NetworkSpec.from_values(res.values)
    assert (spec.decompose_both, spec.rank_dropout, spec.module_dropout, spec.rank_dropout_scale) == (
        True, 0.1, 0.05, True)


def test_fields_kohya_ss_ignores_for_the_type_or_at_their_default_are_not_reported_as_lost():
    res = cfgmod.import_kohya({"LoRA_type": "Standard", "use_cp": True, "train_on_input": True, "unit": 1,
                               "constrain": 0.0, "rescaled": False, "LyCORIS_preset": "full",
                               "num_cpu_threads_per_process": 2, "rank_dropout": 0.1})
    assert res.ok and sorted(res.no_effect) == ["use_cp"]
    assert set(res.unsupported_set) == {"rank_dropout"}  # kohya's own LoRA has it, Patina's LoRA does not
    assert "No effect for this LoRA type in kohya_ss either, skipped: use_cp" in cfgmod.format_load_report(res)


@pytest.mark.parametrize("src,what", [({"LoRA_type": "Flux1", "flux1_checkbox": True}, "Flux1"),
                                      ({"LoRA_type": "LyCORIS/iA3", "train_on_input": True}, "LyCORIS/iA3"),
                                      ({"LoRA_type": "LyCORIS/GLoRA"}, "LyCORIS/GLoRA"),
                                      ({"LoRA_type": "Standard", "sd3_checkbox": True}, "SD3")])
def test_types_patina_does_not_train_are_refused_plainly(src, what):
    res = cfgmod.import_kohya(dict(src, save_model_as="safetensors"))
    assert res.errors[0].message.startswith(f"Patina does not train {what} networks")


# --- 5. a whole presets folder ----------------------------------------------------------------------------

def kohya_folder(root):
    """A kohya_ss presets/lora folder: presets of each kind, a user preset, a broken and a foreign JSON."""
    write(root / "sd15 - plain.json", {"LoRA_type": "Standard", "network_dim": 16, "network_alpha": 8,
                                       "optimizer": "AdamW", "save_model_as": "safetensors"})
    write(root / "lokr-full.json", {"LoRA_type": "LyCORIS/LoKr", "network_dim": 100000, "conv_dim": 100000,
                                    "factor": 6, "use_cp": True, "bucket_reso_steps": 1,
                                    "caption_extension": ".none-use-foldername", "train_norm": True})
    write(root / "flux.json", {"LoRA_type": "Flux1", "flux1_checkbox": True})
    write(root / "ia3.json", {"LoRA_type": "LyCORIS/iA3", "train_on_input": True})
    write(root / "notes.md.json", "{\"LoRA_type\": \"Standard\",")  # broken JSON
    write(root / "other.json", {"prompt": "a cat"})
    write(root / "user_presets" / "mine.json", {"LoRA_type": "Kohya LoCon", "conv_dim": 8, "network_dim": 32})
    write(root / "user_presets" / "sd15 - plain.json", {"LoRA_type": "Standard", "network_dim": 64})
    return root


def test_folder_import_brings_every_preset_with_one_report(tmp_path):
    cfgmod.save_user_preset("mine", dict(defaults(), network_dim=4))  # an existing preset of the same name
    before = cfgmod.find_preset("mine").path.read_text()
    report = import_kohya_folder(kohya_folder(tmp_path / "lora"))
    by = {o.source: o for o in report.outcomes}
    assert len(by) == 8
    assert by["sd15 - plain.json"].status == CLEAN and by["sd15 - plain.json"].name == "sd15 - plain"
    full = by["lokr-full.json"]
    assert full.status == NOTES and any("bucket_reso_steps 1 → 8" in n for n in full.lines)
    assert any(n.startswith("not carried over: train_norm = True: would") for n in full.lines)
    for src, why in (("flux.json", "Patina does not train Flux1"), ("ia3.json", "Patina does not train LyCORIS/iA3"),
                     ("notes.md.json", "is not valid JSON"), ("other.json", "not a kohya_ss preset")):
        assert by[src].status == REFUSED and why in by[src].lines[0], (src, by[src].lines)
    # name collisions: an existing preset and two files of one name are all kept
    assert by["user_presets/mine.json"].name == "mine (2)"
    assert any("already exists" in n for n in by["user_presets/mine.json"].lines)
    assert by["user_presets/sd15 - plain.json"].name == "sd15 - plain (2)"
    assert cfgmod.find_preset("mine").path.read_text() == before
    loaded = cfgmod.read_config(cfgmod.find_preset("lokr-full").path)
    assert loaded.ok and (loaded.values["network_dim"], loaded.values["bucket_reso_steps"]) == (100000, 8)
    assert loaded.values["caption_extension"] == ".none-use-foldername"
    text = report.text()
    assert text.startswith("8 kohya_ss preset file(s)") and "1 imported cleanly, 3 imported with notes, 4 refused" in text


def test_cli_import_kohya_folder(tmp_path, capsys):
    folder = kohya_folder(tmp_path / "lora")
    assert cli(["config", "import-kohya-folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Imported with notes" in out and "Refused (4):" in out and "Patina does not train Flux1" in out
    assert cli(["config", "presets"]) == 0
    assert "lokr-full" in capsys.readouterr().out
    assert cli(["config", "import-kohya-folder", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_folder_without_json_is_a_clear_error(tmp_path):
    with pytest.raises(PatinaError, match="holds no .json preset files"):
        import_kohya_folder(tmp_path)


def test_window_imports_a_kohya_presets_folder_and_shows_one_report(qtbot, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QFileDialog, QMessageBox, QTextBrowser

    from patina.gui.config_document import ReportDialog
    from patina.gui.main_window import MainWindow

    shown, errors = [], []
    monkeypatch.setattr(ReportDialog, "exec", lambda self: shown.append(self) or 1)
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a, **k: errors.append(a[2])))
    folder = kohya_folder(tmp_path / "lora")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    file_menu = w.menuBar().actions()[0].menu()
    assert w.act_import_kohya_presets in file_menu.actions()
    w.act_import_kohya_presets.trigger()
    assert len(shown) == 1 and not errors
    dlg = shown[0]
    assert "Refused (4):" in dlg.report_text and "Imported with notes (2):" in dlg.report_text
    body = dlg.findChild(QTextBrowser).toPlainText()
    assert "Patina does not train Flux1" in body and "lokr-full.json → lokr-full" in body
    w._fill_presets_menu()
    names = [a.text() for a in w.presets_menu.actions()]
    assert {"lokr-full", "mine", "sd15 - plain", "sd15 - plain (2)"} <= set(names)
    assert w.act_import_kohya_presets in w.presets_menu.actions()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "none")))
    w.act_import_kohya_presets.trigger()
    assert len(shown) == 1 and "is not a folder" in errors[0]
