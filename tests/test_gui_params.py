"""The schema-generated parameter pages (gui/param_pages.py), driven offscreen."""

import sys
import types

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QLineEdit, QPlainTextEdit, QSpinBox

from patina.core.config.schema import BY_KEY, PAGES, PARAMS, defaults
from patina.gui.param_pages import ParamForm
from patina.gui.widgets import FloatSpinBox, PathEdit


@pytest.fixture
def form(qtbot):
    f = ParamForm(detect_family=False)
    qtbot.addWidget(f)
    f.resize(1200, 760)
    return f


def user_values(form):
    return {k: v for k, v in form.values().items() if not k.startswith("_")}


def test_one_editor_per_param_chosen_by_type(form):
    expected = {"int": (QSpinBox, FloatSpinBox), "float": (FloatSpinBox,), "bool": (QCheckBox,),
                "choice": (QComboBox,), "str": (QLineEdit,), "text": (QPlainTextEdit,), "path": (PathEdit,),
                "resolution": (QLineEdit,)}
    assert set(form.fields) == {p.key for p in PARAMS}
    for p in PARAMS:
        assert isinstance(form.editor(p.key), expected[p.type]), p.key
        assert form.editor(p.key).toolTip() == p.help
    # every page of the schema is reachable
    for page, _ in PAGES:
        form.show_page(page)
        assert form.current_page() == page


def test_ranges_and_choices_come_from_the_schema(form):
    dim = form.editor("network_dim")
    assert (dim.minimum(), dim.maximum()) == (BY_KEY["network_dim"].min, BY_KEY["network_dim"].max)
    seed = form.editor("seed")  # beyond 32-bit: still editable up to the schema's maximum
    assert seed.maximum() == BY_KEY["seed"].max
    opt = form.editor("optimizer")
    assert [opt.itemData(i) for i in range(opt.count())] == list(BY_KEY["optimizer"].choices)
    fam = form.editor("model_family")
    assert fam.itemText(0) == "Detect from file"
    mtl = form.editor("max_token_length")
    assert [mtl.itemData(i) for i in range(mtl.count())] == [75, 150, 225]


def test_defaults_round_trip_and_set_values(form):
    assert user_values(form) == defaults()
    changed = {"network_dim": 64, "network_alpha": 32.0, "learning_rate": 5e-05, "LoRA_type": "Kohya LoCon",
               "conv_dim": 4, "cache_latents": False, "max_token_length": 150, "seed": 3_000_000_000,
               "sample_prompts": "a dog\na cat --w 768", "output_name": "dog", "max_resolution": "768,512",
               "train_data_dir": "/data/img", "sample_sampler": "k_dpmsolver++"}
    form.set_values(changed)
    vals = user_values(form)
    for k, v in changed.items():
        assert vals[k] == v and type(vals[k]) is type(v), k


def test_learning_rates_are_readable_and_accept_scientific_notation(form):
    lr = form.editor("learning_rate")
    assert lr.text() == "0.0001"
    lr.lineEdit().selectAll()
    lr.lineEdit().insert("5e-5")
    lr.interpretText()
    assert lr.value() == pytest.approx(5e-05)
    assert form.values()["learning_rate"] == pytest.approx(5e-05)
    assert lr.textFromValue(0.00005) == "0.00005"


def test_locon_shows_conv_rank(form, qtbot):
    conv = form.field("conv_dim")
    assert conv.cell.isHidden()
    with qtbot.waitSignal(form.changed):
        form.editor("LoRA_type").setCurrentIndex(BY_KEY["LoRA_type"].choices.index("Kohya LoCon"))
    assert not conv.cell.isHidden() and not conv.label.isHidden()
    assert not form.field("conv_alpha").cell.isHidden()
    form.editor("LoRA_type").setCurrentIndex(0)
    assert conv.cell.isHidden()


def test_constant_scheduler_disables_warmup(form):
    sched = form.editor("lr_scheduler")
    assert form.editor("lr_warmup").isEnabled()
    sched.setCurrentIndex(BY_KEY["lr_scheduler"].choices.index("constant"))
    assert not form.editor("lr_warmup").isEnabled()
    assert not form.editor("lr_warmup_steps").isEnabled()
    sched.setCurrentIndex(BY_KEY["lr_scheduler"].choices.index("cosine_with_restarts"))
    assert form.editor("lr_warmup").isEnabled()
    assert not form.field("lr_scheduler_num_cycles").cell.isHidden()


def test_sdxl_options_only_for_sdxl(form):
    fam = form.editor("model_family")
    fam.setCurrentIndex(BY_KEY["model_family"].choices.index("sd1"))
    assert form.field("sdxl_no_half_vae").cell.isHidden()
    fam.setCurrentIndex(BY_KEY["model_family"].choices.index("sdxl"))
    assert not form.field("sdxl_no_half_vae").cell.isHidden()


def test_model_family_is_detected_in_the_background(qtbot, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("patina.core.models.detect")

    def detect_family(path):
        calls.append(path)
        return "sd1" if path.endswith("v15.safetensors") else "sdxl"

    fake.detect_family = detect_family
    monkeypatch.setitem(sys.modules, "patina.core.models.detect", fake)
    f = ParamForm(detect_family=True)
    qtbot.addWidget(f)
    model = tmp_path / "v15.safetensors"
    model.write_bytes(b"x")
    assert not f.field("sdxl_no_half_vae").cell.isHidden()  # "auto" and unknown: SDXL options stay visible
    with qtbot.waitSignal(f.family_detected, timeout=5000, check_params_cb=lambda fam: fam == "sd1"):
        f.editor("pretrained_model_name_or_path").setText(str(model))
    assert calls == [str(model)]
    assert f.values()["_detected_family"] == "sd1"
    assert f.field("sdxl_no_half_vae").cell.isHidden()
    badge = f.field("pretrained_model_name_or_path").badge
    assert not badge.isHidden() and "SD 1.x" in badge.text()


def test_wheel_is_ignored_on_an_unfocused_spin_box(form, qtbot):
    form.show()
    qtbot.waitExposed(form)
    form.show_page("basic")
    spin = form.editor("network_dim")
    combo = form.editor("optimizer")
    assert spin.focusPolicy() == Qt.FocusPolicy.StrongFocus

    def wheel(widget):
        ev = QWheelEvent(QPointF(5, 5), QPointF(widget.mapToGlobal(QPoint(5, 5))), QPoint(0, 0), QPoint(0, 120),
                         Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(widget, ev)

    before, idx = spin.value(), combo.currentIndex()
    wheel(spin)
    wheel(combo)
    assert spin.value() == before and combo.currentIndex() == idx
    form.activateWindow()
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    wheel(spin)
    assert spin.value() == before + 1


def test_invalid_fields_are_marked_in_place(form):
    res = form.field("max_resolution")
    form.editor("max_resolution").setText("huge")
    assert res.frame.state == "error"
    assert not res.message.isHidden() and "resolution" in res.message.text()
    assert any(p.key == "max_resolution" for p in form.errors())
    form.editor("max_resolution").setText("768x512")
    assert res.frame.state == "" and res.message.isHidden()

    # a cross-field problem names the other field by its label, not its JSON key
    form.editor("min_bucket_reso").setValue(1024)
    form.editor("max_bucket_reso").setValue(512)
    msg = form.field("min_bucket_reso").message.text()
    assert form.field("min_bucket_reso").frame.state == "error"
    assert "Maximum bucket resolution" in msg and "max_bucket_reso" not in msg

    form.editor("optimizer_args").setText("weight_decay")
    assert form.field("optimizer_args").frame.state == "error"
    # the page list shows where the problems are
    basic = [form.nav.item(i) for i in range(form.nav.count()) if form.nav.item(i).data(Qt.ItemDataRole.UserRole)
             == "basic"][0]
    assert "●" in basic.text()


def test_missing_input_path_is_a_warning(form, tmp_path):
    form.editor("train_data_dir").setText(str(tmp_path / "nope"))
    f = form.field("train_data_dir")
    assert f.frame.state == "warning" and "no such folder" in f.message.text().lower()
    form.editor("train_data_dir").setText(str(tmp_path))
    assert f.frame.state == ""


def test_every_input_path_of_the_schema_is_checked_in_place(form, tmp_path):
    from patina.core.config.schema import INPUT_PATHS, check_values

    for key in INPUT_PATHS:
        form.editor(key).setText(str(tmp_path / "nope" / key))
        assert form.field(key).frame.state == "warning", key
    # the form shows what the schema's one validator finds
    form.editor("network_dim").setValue(1)
    form.editor("min_timestep").setValue(999)
    form.editor("max_timestep").setValue(10)
    _, expected = check_values(form.values(), inputs=True)
    assert [str(p) for p in form.problems()] == [str(p) for p in expected]
    assert {p.key for p in form.problems()} >= set(INPUT_PATHS) | {"min_timestep"}


def test_choice_labels_and_placeholders_come_from_the_schema(form):
    for p in PARAMS:
        ed = form.editor(p.key)
        if p.type == "choice":
            assert [ed.itemText(i) for i in range(ed.count())] == [p.choice_label(c) for c in p.choices], p.key
        if p.placeholder:
            line = ed if isinstance(ed, (QLineEdit, QPlainTextEdit)) else ed.line
            assert line.placeholderText() == p.placeholder, p.key
    sampler = form.editor("sample_sampler")
    assert sampler.itemText(list(BY_KEY["sample_sampler"].choices).index("euler_a")) == "Euler a  (euler_a)"


def _drop(widget, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    ev = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(ev)
    return ev


def test_drop_a_folder_or_file_on_a_path_field(form, tmp_path):
    folder = tmp_path / "my images é"
    folder.mkdir()
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    data = form.editor("train_data_dir")
    _drop(data.line, folder)
    assert data.text() == str(folder)
    assert form.values()["train_data_dir"] == str(folder)
    _drop(data.line, file)  # a file is not a folder: refused
    assert data.text() == str(folder)
    model = form.editor("pretrained_model_name_or_path")  # file_or_dir takes both
    _drop(model.line, file)
    assert model.text() == str(file)


def test_changed_is_emitted_by_edits_not_by_set_values(form, qtbot):
    with qtbot.assertNotEmitted(form.changed):
        form.set_values({"network_dim": 32})
    with qtbot.waitSignal(form.changed):
        form.editor("network_dim").setValue(16)


def test_image_folder_is_on_the_model_and_folders_pages_as_one_field(form, qtbot, tmp_path):
    """kohya_ss users look for the image folder under Folders (where older kohya_ss had it) and under
    Model (where it is now): both pages show it, and it is one value."""
    folders_page = form.stack.widget([p for p, _ in PAGES].index("folders"))
    mirror = [w for w in folders_page.findChildren(PathEdit) if "Image folder" in w.toolTip() or
              "CONTAINS" in w.toolTip()]
    assert len(mirror) == 1
    mirror = mirror[0]
    assert "Model page" in mirror.toolTip()
    # typing in the Folders copy sets the field (and marks the config changed)
    with qtbot.waitSignal(form.changed):
        mirror.setText(str(tmp_path / "img"))
    assert form.values()["train_data_dir"] == str(tmp_path / "img")
    assert form.editor("train_data_dir").text() == str(tmp_path / "img")
    # editing the Model page's field or loading a config updates the Folders copy
    form.editor("train_data_dir").setText(str(tmp_path / "other"))
    assert mirror.text() == str(tmp_path / "other")
    form.set_values({"train_data_dir": "/data/dog/img"})
    assert mirror.text() == "/data/dog/img"
    assert list(form.values()).count("train_data_dir") == 1
