"""The Dataset tab with real widgets and real files: folder wizard, grid, caption editing, batch edits."""

from __future__ import annotations

import codecs
import hashlib
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QTextCursor  # noqa: E402

from patina.gui.caption_batch import SCOPE_ALL, SCOPE_FOLDER  # noqa: E402
from patina.gui.dataset_tab import DatasetTab  # noqa: E402
from patina.gui.thumbnails import thumbs_dir  # noqa: E402
import imagefactory as fac  # noqa: E402

BOM = codecs.BOM_UTF8


# --- helpers --------------------------------------------------------------------------------------------

def image_hashes(root: Path) -> dict[str, str]:
    exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in exts}


@pytest.fixture
def make_tab(qtbot):
    tabs = []

    def make():
        tab = DatasetTab()
        qtbot.addWidget(tab)
        tab.resize(1280, 800)
        tab.show()
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.shutdown()


def dataset(tmp_path: Path) -> Path:
    """img/10_sks dog (a, b, c with captions; d without) and img/2_cat (e with a caption)."""
    img = tmp_path / "img"
    dog, cat = img / "10_sks dog", img / "2_cat"
    for name in "abcd":
        fac.save(dog / f"{name}.png", size=(40, 30))
    fac.save(cat / "e.png")
    (dog / "a.txt").write_text("sks dog, sitting, grass", encoding="utf-8")
    (dog / "b.txt").write_text("sks dog, running", encoding="utf-8")
    (dog / "c.txt").write_text("sks dog, sitting on a sofa", encoding="utf-8")
    (cat / "e.txt").write_text("a cat, sitting", encoding="utf-8")
    return img


def select(qtbot, tab: DatasetTab, path: Path) -> None:
    assert tab.select_path(path), f"{path} is not shown"
    qtbot.waitUntil(lambda: tab.current_item() is not None and tab.current_item().path == path, timeout=2000)


def type_into_editor(qtbot, tab: DatasetTab, text: str) -> None:
    editor = tab.caption_panel.editor
    editor.setFocus()
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, text)


def wait_file(qtbot, path: Path, expected: bytes | None, timeout: int = 10000) -> None:
    def ok():
        if expected is None:
            return not path.exists()
        return path.exists() and path.read_bytes() == expected
    qtbot.waitUntil(ok, timeout=timeout)


def wait_batch(qtbot, tab: DatasetTab) -> None:
    qtbot.waitUntil(lambda: not tab._batch_running, timeout=5000)


# --- folder wizard -------------------------------------------------------------------------------------------

def test_wizard_end_to_end_creates_folders_and_emits_paths(qtbot, make_tab, tmp_path):
    src = tmp_path / "photos"
    for i in range(3):
        fac.save(src / f"p{i}.jpg", size=(64, 48))
    (src / "p0.txt").write_text("sks dog, on a chair", encoding="utf-8")
    reg = tmp_path / "reg_src"
    fac.save(reg / "r0.png")
    before = image_hashes(tmp_path)
    before_caption = (src / "p0.txt").read_bytes()
    dest = tmp_path / "training"

    tab = make_tab()
    assert tab.stack.currentWidget() is tab.empty  # no folder yet: the empty state offers the wizard
    dlg = tab.open_wizard()
    assert dlg.repeats.value() == 40 and dlg.reg_repeats.value() == 1
    dlg.instance.setText("sks")
    dlg.klass.setText("dog")
    dlg.images.setText(str(src))
    dlg.repeats.setValue(20)
    dlg.reg_images.setText(str(reg))
    dlg.dest.setText(str(dest))
    with qtbot.waitSignal(tab.folders_prepared, timeout=10000) as blocker:
        qtbot.mouseClick(dlg.prepare_button, Qt.MouseButton.LeftButton)
    paths = blocker.args[0]
    assert paths == {"train_data_dir": str(dest / "img"), "reg_data_dir": str(dest / "reg"),
                     "output_dir": str(dest / "model"), "logging_dir": str(dest / "log")}
    concept = dest / "img" / "20_sks dog"
    assert sorted(p.name for p in concept.iterdir()) == ["p0.jpg", "p0.txt", "p1.jpg", "p2.jpg"]
    assert (dest / "reg" / "1_dog" / "r0.png").is_file()
    assert (dest / "model").is_dir() and (dest / "log").is_dir()
    # sources untouched
    assert {k: v for k, v in image_hashes(tmp_path).items() if not k.startswith(str(dest))} == before
    assert (src / "p0.txt").read_bytes() == before_caption
    # the new image folder is in the grid, and the dialog says what it did
    assert tab.model.rowCount() == 3
    assert tab.stack.currentWidget() is tab.splitter
    assert "Copied 3 image(s)" in dlg.status.text()
    assert dlg.prepare_button.isEnabled()


def test_wizard_shows_errors_in_the_dialog(qtbot, make_tab, tmp_path):
    src = tmp_path / "photos"
    fac.save(src / "p.png")
    tab = make_tab()
    dlg = tab.open_wizard()
    dlg.instance.setText("sks")
    dlg.klass.setText("dog")
    dlg.images.setText(str(src))
    dlg.dest.setText(str(src / "inside"))  # destination inside the source: refused
    with qtbot.assertNotEmitted(tab.folders_prepared, wait=200):
        dlg.start()
        qtbot.waitUntil(lambda: dlg.prepare_button.isEnabled(), timeout=5000)
    assert "inside" in dlg.status.text() and str(src) in dlg.status.text()
    assert not (src / "inside").exists()
    dlg.dest.setText("")
    dlg.start()
    qtbot.waitUntil(lambda: "destination folder" in dlg.status.text(), timeout=5000)


# --- grid ----------------------------------------------------------------------------------------------------------

def test_grid_lists_2000_images_fast_and_thumbnails_arrive(qtbot, make_tab, tmp_path):
    one = fac.save(tmp_path / "one.png", size=(24, 24))
    data = one.read_bytes()
    folder = tmp_path / "img" / "5_many"
    folder.mkdir(parents=True)
    for i in range(2000):
        (folder / f"img_{i:04d}.png").write_bytes(data)
    for i in range(0, 2000, 2):
        (folder / f"img_{i:04d}.txt").write_text("tag", encoding="utf-8")

    tab = make_tab()
    start = time.perf_counter()
    tab.set_dataset(str(tmp_path / "img"), ".txt")
    qtbot.wait(1)  # one event-loop turn: the first paint asks for the visible thumbnails
    elapsed = time.perf_counter() - start
    assert tab.model.rowCount() == 2000
    assert elapsed < 1.0, f"listing 2,000 images took {elapsed:.2f} s"
    assert tab.counts()[:2] == (2000, 1000)
    # thumbnails: only the visible ones are decoded, and they land in the disk cache
    first = tab.model.item(0)
    qtbot.waitUntil(lambda: tab.model._pixmaps.get(str(first.path)) is not None, timeout=5000)
    assert any(thumbs_dir().rglob("*.jpg"))
    assert len(tab.model._pixmaps) < 400
    # scrolling to the end asks for the rows now on screen
    tab.grid.scrollToBottom()
    last = tab.model.item(1999)
    qtbot.waitUntil(lambda: tab.model._pixmaps.get(str(last.path)) is not None, timeout=5000)


def test_folder_combo_and_text_filter(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img), "txt")
    assert tab.proxy.rowCount() == 5
    assert [tab.folder_combo.itemData(i) for i in range(tab.folder_combo.count())] == [None, "10_sks dog", "2_cat"]
    tab.folder_combo.setCurrentIndex(2)
    assert tab.proxy.rowCount() == 1
    qtbot.waitUntil(lambda: tab.counter_text().startswith("1 image · 1 captioned"), timeout=2000)
    tab.folder_combo.setCurrentIndex(0)
    qtbot.waitUntil(lambda: all(it.caption is not None for it in tab.model.items()), timeout=3000)
    tab.filter_edit.setText("sitting")
    qtbot.waitUntil(lambda: tab.proxy.rowCount() == 3, timeout=2000)  # a, c, e
    tab.filter_edit.setText("sitting, sofa")
    qtbot.waitUntil(lambda: tab.proxy.rowCount() == 1, timeout=2000)
    tab.filter_edit.setText("")
    qtbot.waitUntil(lambda: tab.proxy.rowCount() == 5, timeout=2000)


def test_rejected_images_are_marked_with_their_reason(qtbot, make_tab, tmp_path):
    folder = tmp_path / "img" / "3_thing"
    fac.save(folder / "good.png")
    fac.truncated_jpeg(folder / "cut.jpg")
    fac.zero_byte(folder / "empty.png")
    fac.text_file(folder / "fake.png")
    before = image_hashes(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(tmp_path / "img"), ".txt")
    qtbot.waitUntil(lambda: all(it.check is not None for it in tab.model.items()), timeout=5000)
    items = {it.name: it for it in tab.model.items()}
    assert not items["good.png"].rejected
    assert "empty" in items["empty.png"].reason
    assert "truncated or corrupt" in items["cut.jpg"].reason
    assert "not an image" in items["fake.png"].reason
    qtbot.waitUntil(lambda: "3 rejected" in tab.counter_text(), timeout=2000)
    row = tab.model.row_of(items["cut.jpg"].path)
    assert "truncated or corrupt" in tab.model.data(tab.model.index(row), Qt.ItemDataRole.ToolTipRole)
    select(qtbot, tab, items["empty.png"].path)
    assert tab.caption_panel.reason.isVisible()
    assert "file is empty" in tab.caption_panel.reason.text()
    assert image_hashes(tmp_path) == before


def test_wrong_level_shows_the_convention_and_the_fix(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img / "10_sks dog"), ".txt")
    assert tab.stack.currentWidget() is tab.empty
    assert "parent folder" in tab.empty_problem.text() and str(img) in tab.empty_problem.text()
    assert "<code>" in tab.empty_text.text()
    tab.set_dataset(str(tmp_path / "nope"), ".txt")
    assert "does not exist" in tab.empty_problem.text()
    tab.set_dataset(str(img), ".txt")
    assert tab.stack.currentWidget() is tab.splitter


# --- caption editing -------------------------------------------------------------------------------------------------

def test_edit_autosaves_and_undo_restores_the_file(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    before = image_hashes(tmp_path)
    cap = img / "10_sks dog" / "b.txt"
    original = cap.read_bytes()
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "b.png")
    assert tab.caption_panel.editor.caption_text() == "sks dog, running"
    type_into_editor(qtbot, tab, ", fast")
    assert cap.read_bytes() == original  # not yet: autosave waits ~500 ms after the last key
    wait_file(qtbot, cap, b"sks dog, running, fast")
    assert tab.undo_action.isEnabled()
    tab.undo()
    wait_file(qtbot, cap, original)
    qtbot.waitUntil(lambda: tab.caption_panel.editor.caption_text() == "sks dog, running", timeout=2000)
    tab.redo()
    wait_file(qtbot, cap, b"sks dog, running, fast")
    assert image_hashes(tmp_path) == before


def test_bom_crlf_two_lines_survive_an_edit_of_one_word(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    cap = img / "10_sks dog" / "a.txt"
    original = BOM + "sks dog, sitting\r\non the grass, é\r\n".encode("utf-8")
    cap.write_bytes(original)
    before = image_hashes(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    editor = tab.caption_panel.editor
    assert editor.caption_text() == "sks dog, sitting\non the grass, é\n"
    # replace the word "sitting" by "standing" with the keyboard
    text = editor.caption_text()
    cursor = editor.textCursor()
    cursor.setPosition(text.index("sitting"))
    cursor.setPosition(text.index("sitting") + len("sitting"), QTextCursor.MoveMode.KeepAnchor)
    editor.setTextCursor(cursor)
    editor.setFocus()
    qtbot.keyClicks(editor, "standing")
    expected = BOM + "sks dog, standing\r\non the grass, é\r\n".encode("utf-8")
    wait_file(qtbot, cap, expected)
    tab.undo()
    wait_file(qtbot, cap, original)
    assert image_hashes(tmp_path) == before


def test_caption_file_is_created_only_when_typing(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    cap = img / "10_sks dog" / "d.txt"
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "d.png")
    assert "sks dog" in tab.caption_panel.editor.placeholderText()
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    select(qtbot, tab, img / "10_sks dog" / "d.png")
    tab.flush()
    assert not cap.exists()
    type_into_editor(qtbot, tab, "sks dog, jumping")
    tab.flush()  # Ctrl+S / closing: written now, without waiting for the autosave delay
    assert cap.read_bytes() == b"sks dog, jumping"
    assert tab.model.item_for(img / "10_sks dog" / "d.png").has_caption
    tab.undo()
    wait_file(qtbot, cap, None)  # undo removes the file the edit created


def test_unreadable_caption_is_reported_by_name_and_not_editable(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    (img / "10_sks dog" / "d.txt").mkdir()  # a folder where the caption file should be
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "d.png")
    assert "d.txt" in tab.caption_panel.state.text()
    assert tab.caption_panel.editor.isReadOnly()
    assert not tab.caption_panel.has_pending()


def test_ctrl_s_saves_captions_even_inside_a_window_with_its_own_ctrl_s(qtbot, tmp_path):
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QVBoxLayout, QWidget
    img = dataset(tmp_path)
    window = QWidget()
    qtbot.addWidget(window)
    saved_config = []
    save = QAction("Save config", window)
    save.setShortcut(QKeySequence.StandardKey.Save)
    save.triggered.connect(lambda: saved_config.append(1))
    window.addAction(save)
    tab = DatasetTab(window)
    QVBoxLayout(window).addWidget(tab)
    window.resize(1280, 800)
    with qtbot.waitActive(window):   # window shortcuts only fire in the active window
        window.show()
        window.activateWindow()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "b.png")
    type_into_editor(qtbot, tab, ", jump")
    qtbot.keyClick(tab.caption_panel.editor, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert (img / "10_sks dog" / "b.txt").read_bytes() == b"sks dog, running, jump"  # at once, no 500 ms wait
    assert saved_config == []
    tab.shutdown()


def test_edits_are_saved_when_switching_images(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    cap = img / "10_sks dog" / "a.txt"
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    type_into_editor(qtbot, tab, ", tree")
    tab.grid.setFocus()
    qtbot.keyClick(tab.grid, Qt.Key.Key_Right)  # arrow keys move the selection
    qtbot.waitUntil(lambda: tab.current_item().name == "b.png", timeout=2000)
    wait_file(qtbot, cap, b"sks dog, sitting, grass, tree")


def test_tag_chips_remove_and_restore_a_tag(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    cap = img / "10_sks dog" / "a.txt"
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    chips = tab.caption_panel.tags
    assert [c.property("tag") for c in chips.chips()] == ["sks dog", "sitting", "grass"]
    qtbot.mouseClick(chips.chip("sitting"), Qt.MouseButton.LeftButton)
    wait_file(qtbot, cap, b"sks dog, grass")
    assert not chips.chip("sitting").isChecked()  # still shown, so it can be put back
    qtbot.mouseClick(chips.chip("sitting"), Qt.MouseButton.LeftButton)
    wait_file(qtbot, cap, b"sks dog, sitting, grass")
    # quick tags: click to append, click again to remove
    tab.caption_panel.quick_edit.setText("outdoors, sks dog")
    tab.caption_panel.quick_edit.editingFinished.emit()
    quick = tab.caption_panel.quick
    assert quick.chip("sks dog").isChecked() and not quick.chip("outdoors").isChecked()
    # a chip added to a visible area is shown at the next event-loop turn; a click before that is lost
    qtbot.waitUntil(lambda: quick.chip("outdoors") is not None and quick.chip("outdoors").isVisible())
    qtbot.mouseClick(quick.chip("outdoors"), Qt.MouseButton.LeftButton)
    wait_file(qtbot, cap, b"sks dog, sitting, grass, outdoors")
    tab.undo()
    wait_file(qtbot, cap, b"sks dog, sitting, grass")
    # the quick tags are remembered for the next session
    assert DatasetTab().caption_panel.quick_tags() == ["outdoors", "sks dog"]


def test_an_older_save_finishing_late_never_puts_back_older_text(qtbot, make_tab, tmp_path):
    """Edit, then edit again before the first save has reported: the first save's result must not replace
    the newer text in the editor (the next edit would build on the older text and lose a change)."""
    import threading

    from patina.gui.tasks import run_task

    img = dataset(tmp_path)
    cap = img / "10_sks dog" / "a.txt"
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    panel = tab.caption_panel
    panel.editor.setPlainText("sks dog, grass")
    panel.commit()
    assert tab.store.wait(5000) and cap.read_text(encoding="utf-8") == "sks dog, grass"   # reported later
    release = threading.Event()
    run_task(release.wait, 10, lane=tab.store._lane)   # holds the next write back
    panel.editor.setPlainText("sks dog, grass, outdoors")
    panel.commit()
    qtbot.wait(100)   # the first save's result arrives; the second save waits behind the blocker
    assert panel.editor.caption_text() == "sks dog, grass, outdoors"
    release.set()
    wait_file(qtbot, cap, b"sks dog, grass, outdoors")
    tab.undo()
    wait_file(qtbot, cap, b"sks dog, grass")
    qtbot.waitUntil(lambda: panel.editor.caption_text() == "sks dog, grass", timeout=5000)   # undo still shows


def test_find_replace_and_prefix_across_folders_with_counts_and_undo(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    dog, cat = img / "10_sks dog", img / "2_cat"
    originals = {p: p.read_bytes() for p in img.rglob("*.txt")}
    before = image_hashes(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, dog / "a.png")
    tab.side.setCurrentWidget(tab.batch_panel)
    panel = tab.batch_panel
    qtbot.waitUntil(lambda: "10_sks dog" in panel.scope.currentText(), timeout=2000)
    assert panel.scope_value() == SCOPE_FOLDER  # the folder of the selected image
    panel.find.setText("sitting")
    panel.replace.setText("resting")
    qtbot.mouseClick(panel.replace_button, Qt.MouseButton.LeftButton)
    wait_batch(qtbot, tab)
    assert tab.last_batch_result[:2] == (2, 2)
    assert "2 times in 2 caption(s)" in panel.result.text()
    assert (dog / "a.txt").read_bytes() == b"sks dog, resting, grass"
    assert (dog / "c.txt").read_bytes() == b"sks dog, resting on a sofa"
    assert (cat / "e.txt").read_bytes() == originals[cat / "e.txt"]  # other folder untouched
    assert not (dog / "d.txt").exists()  # no caption file is created by a batch edit
    qtbot.waitUntil(lambda: tab.caption_panel.editor.caption_text() == "sks dog, resting, grass", timeout=2000)
    # one undo step puts every file back
    tab.undo()
    for p, data in originals.items():
        wait_file(qtbot, p, data)

    tab.add_to_captions("best quality", True, SCOPE_ALL, at_start=True)
    wait_batch(qtbot, tab)
    assert tab.last_batch_result == (4, 4, 0, 1)  # 4 changed, d.png has no caption file
    assert (cat / "e.txt").read_bytes() == b"best quality, a cat, sitting"
    assert "1 image(s) without a caption file" in panel.result.text()
    tab.add_to_captions("best quality", True, SCOPE_ALL, at_start=True)  # again: nothing doubles
    wait_batch(qtbot, tab)
    assert tab.last_batch_result[0] == 0 and tab.last_batch_result[2] == 4
    tab.add_to_captions("hd", True, SCOPE_ALL, at_start=False)
    wait_batch(qtbot, tab)
    assert (dog / "b.txt").read_bytes() == b"best quality, sks dog, running, hd"
    tab.undo()
    tab.undo()
    for p, data in originals.items():
        wait_file(qtbot, p, data)
    assert image_hashes(tmp_path) == before


def test_tag_frequency_over_shown_captions(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    qtbot.waitUntil(lambda: all(it.caption is not None for it in tab.model.items()), timeout=3000)
    tab.side.setCurrentWidget(tab.tag_panel)
    qtbot.waitUntil(lambda: tab.tag_panel.counts.get("sks dog") == 3, timeout=2000)
    assert tab.tag_panel.counts["sitting"] == 2  # a.txt and e.txt ("sitting on a sofa" is its own tag)
    tab.folder_combo.setCurrentIndex(2)  # 2_cat only
    qtbot.waitUntil(lambda: "sks dog" not in tab.tag_panel.counts, timeout=2000)
    tab.tag_panel.tag_activated.emit("sitting")
    assert tab.filter_edit.text() == "sitting"


def test_copying_a_dataset_keeps_thumbnails_separate(qtbot, make_tab, tmp_path):
    """The thumbnail cache key includes the path, so two folders with the same names never mix."""
    img = dataset(tmp_path / "one")
    other = tmp_path / "two" / "img"
    shutil.copytree(img, other)
    fac.save(other / "2_cat" / "e.png", color=(0, 255, 0))
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    e1 = img / "2_cat" / "e.png"
    qtbot.waitUntil(lambda: tab.model._pixmaps.get(str(e1)) is not None, timeout=5000)
    c1 = tab.model._pixmaps[str(e1)].toImage().pixelColor(5, 5)
    tab.set_dataset(str(other), ".txt")
    e2 = other / "2_cat" / "e.png"
    qtbot.waitUntil(lambda: tab.model._pixmaps.get(str(e2)) is not None, timeout=5000)
    c2 = tab.model._pixmaps[str(e2)].toImage().pixelColor(5, 5)
    assert (c1.red(), c1.green()) != (c2.red(), c2.green())


# --- first contact ------------------------------------------------------------------------------------------

def test_batch_edit_offers_to_create_missing_captions_only_on_request(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    dog, cat = img / "10_sks dog", img / "2_cat"
    fac.save(cat / "f.png")   # a second uncaptioned image, in the other folder
    before = image_hashes(tmp_path)
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    panel = tab.batch_panel
    tab.add_to_captions("best quality", True, SCOPE_ALL, at_start=True)
    wait_batch(qtbot, tab)
    assert tab.last_batch_result[3] == 2
    # offered, not done: nothing is created until the user clicks
    assert panel.create_button.isVisibleTo(panel) and "2 images" in panel.create_button.text()
    assert not (dog / "d.txt").exists() and not (cat / "f.txt").exists()
    qtbot.mouseClick(panel.create_button, Qt.MouseButton.LeftButton)
    wait_batch(qtbot, tab)
    # each starts from its folder's name (what training used for it), with the same edit applied
    assert (dog / "d.txt").read_text(encoding="utf-8") == "best quality, sks dog"
    assert (cat / "f.txt").read_text(encoding="utf-8") == "best quality, cat"
    assert "Created 2 caption file(s)" in panel.result.text()
    assert not panel.create_button.isVisibleTo(panel)
    tab.undo()   # one step removes the created files again
    wait_file(qtbot, dog / "d.txt", None)
    wait_file(qtbot, cat / "f.txt", None)
    assert image_hashes(tmp_path) == before


def test_find_replace_offer_creates_folder_captions(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    dog = img / "10_sks dog"
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, dog / "a.png")
    tab.replace_in_captions("sks", "ohwx", scope=SCOPE_FOLDER)
    wait_batch(qtbot, tab)
    assert tab.batch_panel.create_button.isVisibleTo(tab.batch_panel)
    tab.create_missing_captions()
    wait_batch(qtbot, tab)
    assert (dog / "d.txt").read_text(encoding="utf-8") == "ohwx dog"


def test_regularisation_images_can_be_browsed(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)
    reg = tmp_path / "reg"
    for name in ("r1", "r2", "r3"):
        fac.save(reg / "1_dog" / f"{name}.png")
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    assert not tab.source_combo.isVisibleTo(tab)   # no reg folder: no switch
    tab.set_reg_folder(str(reg))
    assert tab.source_combo.isVisibleTo(tab)
    assert tab.model.rowCount() == 5
    tab.source_combo.setCurrentIndex(tab.source_combo.findData("reg"))
    qtbot.waitUntil(lambda: tab.model.rowCount() == 3, timeout=3000)
    assert {it.path.name for it in tab.model.items()} == {"r1.png", "r2.png", "r3.png"}
    assert "1_dog" in tab.folder_combo.itemText(1)
    tab.set_dataset(str(img), ".txt")  # the window re-sends the same training folder: the reg view stays
    assert tab.model.rowCount() == 3
    tab.show_source("train")
    assert tab.model.rowCount() == 5


def test_small_images_are_marked_as_enlarged_in_the_preview(qtbot, make_tab, tmp_path):
    img = dataset(tmp_path)   # 40×30 images
    tab = make_tab()
    tab.set_dataset(str(img), ".txt")
    select(qtbot, tab, img / "10_sks dog" / "a.png")
    preview = tab.caption_panel.preview
    qtbot.waitUntil(lambda: preview.enlarged > 1.0, timeout=5000)
    assert "40×30 px" in preview.mark_text and "Enlarged" in preview.mark_text
    assert preview.pixmap().width() > 40


def test_wizard_step_hint_counts_reg_images_and_the_batch_like_the_plan(qtbot, make_tab, tmp_path):
    from patina.core.dataset.summary import epoch_arithmetic
    src, reg = tmp_path / "photos", tmp_path / "reg_src"
    for i in range(3):
        fac.save(src / f"p{i}.jpg", size=(64, 48))
    fac.save(reg / "r0.png")
    tab = make_tab()
    tab.batch_size_source = lambda: 2
    dlg = tab.open_wizard()
    dlg.images.setText(str(src))
    dlg.repeats.setValue(20)
    dlg.reg_images.setText(str(reg))
    dlg.reg_images.editingFinished.emit()
    expected = "3 images × 20 repeats = 60 train + 60 reg = 120 samples / batch 2 = 60 steps per epoch"
    assert dlg.repeats_hint.text() == expected + "."
    assert epoch_arithmetic([(3, 20)], 1, 2).text == expected   # the one function the plan dialog uses too
    dlg.reject()
