"""The main window's config file life cycle: the document state (which file, unsaved changes), new, open,
save, save as, kohya export, presets and recent files. A part of :class:`patina.gui.main_window.MainWindow`,
kept apart because it is one job; it uses the window's form, state, menus and status bar.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any, Mapping

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QFont
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QInputDialog, QLabel, QMenu, QMessageBox,
                               QPlainTextEdit, QTextBrowser, QVBoxLayout)

from patina.core.config.files import (LoadResult, apply_preset, format_load_report, list_presets, read_config,
                                      save_config, save_user_preset, write_kohya)
from patina.core.config.schema import defaults
from patina.core.errors import PatinaError
from patina.core.paths import user_presets_dir

CONFIG_FILTER = "Patina or kohya_ss config (*.json);;All files (*)"


class ReportDialog(QDialog):
    """A readable, copyable report (what a loaded file contained, what was not carried over)."""

    def __init__(self, title: str, heading: str, text: str, parent=None, html: str = ""):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.report_text = text
        layout = QVBoxLayout(self)
        head = QLabel(heading, self)
        head.setWordWrap(True)
        layout.addWidget(head)
        if html:  # the same report laid out (lists keep wrapped lines indented)
            body = QTextBrowser(self)
            body.setHtml(html)
        else:
            body = QPlainTextEdit(self)
            body.setReadOnly(True)
            body.setPlainText(text)
            body.setFont(QFont("monospace"))
            body.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        layout.addWidget(body, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok, self)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
        self.resize(720, 460)


_GROUP_MARKS = {"clean": ("✓", "#2e7d32"), "notes": ("●", "#b26a00"), "refused": ("✗", "#c62828")}


def folder_report_html(report) -> str:
    """A kohya_ss folder import (:class:`patina.core.config.kohya_folder.FolderImport`) as HTML: one list per
    group, each file with the preset it became and its notes or the reason it was refused."""
    from patina.core.config.kohya_folder import GROUP_TITLES

    parts = []
    for status, (mark, color) in _GROUP_MARKS.items():
        items = report.group(status)
        if not items:
            continue
        parts.append(f'<h3 style="color:{color}">{mark} {GROUP_TITLES[status]} ({len(items)})</h3><ul>')
        for o in items:
            name = f" → <b>{escape(o.name)}</b>" if o.name else ""
            notes = "".join(f"<li>{escape(line)}</li>" for line in o.lines)
            parts.append(f"<li>{escape(o.source)}{name}" + (f"<ul>{notes}</ul>" if notes else "") + "</li>")
        parts.append("</ul>")
    return "".join(parts)


class ConfigDocument:
    """Mixed into MainWindow, which owns the form, ``state``, ``path``, ``imported_from`` and the menus."""

    # -- document state --------------------------------------------------------------------------------------

    @staticmethod
    def _comparable(values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if not k.startswith("_")}

    def values(self) -> dict[str, Any]:
        return self.form.values()

    def is_dirty(self) -> bool:
        return self._dirty

    def _mark_clean(self) -> None:
        self._saved = self._comparable(self.form.values())
        self._set_dirty(False)

    def _set_dirty(self, dirty: bool) -> None:
        self._dirty = dirty
        self._update_title()

    def _form_changed(self) -> None:
        self._set_dirty(self._comparable(self.form.values()) != self._saved)
        self._dataset_timer.start()

    def document_name(self) -> str:
        if self.path is not None:
            return self.path.name
        if self.imported_from is not None:
            return f"{self.imported_from.name} (imported from kohya_ss)"
        return "Untitled"

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.document_name()}{'*' if self._dirty else ''} — Patina")
        if hasattr(self, "path_label"):
            self.path_label.setText(str(self.path) if self.path else "not saved yet")

    def _config_for_run(self) -> dict[str, Any]:
        self.flush_dataset_tab()
        return self.form.values()

    # -- new / open / save ------------------------------------------------------------------------------------

    def maybe_save(self, action: str = "continuing") -> bool:
        """Ask Save / Discard / Cancel when there are unsaved changes. True means go ahead."""
        self.flush_dataset_tab()
        if not self._dirty:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes",
            f"The settings in “{self.document_name()}” have changed. Save them before {action}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def new_config(self) -> None:
        if not self.maybe_save("starting a new configuration"):
            return
        self.form.set_values(defaults())
        self.path = None
        self.imported_from = None
        self._mark_clean()
        self.sync_dataset_tab()
        self.statusBar().showMessage("New configuration with the default settings.", 5000)
        if self.machine_defaults:
            self._apply_machine_defaults()
        else:
            self._start_probe()

    def open_dialog(self) -> None:
        if not self.maybe_save("opening another file"):
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a config", self._dialog_dir(), CONFIG_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str | os.PathLike, *, quiet: bool = False) -> bool:
        """Open a Patina config, or import a kohya_ss one. ``quiet`` reports in the status bar instead of a
        dialog (used when the last session is restored)."""
        path = Path(path)
        try:
            result = read_config(path)
        except PatinaError as exc:
            if quiet:
                self.statusBar().showMessage(f"Could not reopen the last config: {exc}", 15000)
            else:
                QMessageBox.critical(self, "Cannot open the file", str(exc))
            return False
        self.form.set_values(result.values)
        self.state.last_dir = str(path.parent)
        report = format_load_report(result, path.name)
        if result.kohya:
            # Never save Patina's format over a kohya_ss file: the import is a new, unsaved document.
            self.path = None
            self.imported_from = path
            self._saved = self._comparable(defaults())
            self._set_dirty(True)
            self._show_report("kohya_ss config imported",
                              f"<b>{path.name}</b> is a kohya_ss config. Its settings were imported; Save writes a "
                              "Patina config (the kohya_ss file is left as it is).", report)
        else:
            self.path = path
            self.imported_from = None
            self._mark_clean()
            self.state.add_recent(path)
            self._persist_state()
            if result.problems or result.unknown:
                if quiet:
                    n = len(result.errors)
                    self.statusBar().showMessage(
                        f"Reopened {path.name}" + (f"; {n} setting(s) were invalid and were reset" if n else ""),
                        15000)
                else:
                    self._show_report("Opened with problems",
                                      f"<b>{path.name}</b> was opened, but some settings need attention. Invalid "
                                      "settings were reset to their defaults.", report)
            else:
                self.statusBar().showMessage(f"Opened {path}", 5000)
        self.sync_dataset_tab()
        return True

    def _show_report(self, title: str, heading: str, text: str, html: str = "") -> None:
        ReportDialog(title, heading, text, self, html).exec()

    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self._write(self.path)

    def save_as(self) -> bool:
        if self.path is not None:
            suggestion = str(self.path)
        else:
            stem = self.imported_from.stem + "-patina" if self.imported_from else (
                str(self.form.values().get("output_name") or "lora"))
            suggestion = str(Path(self._training_folder() or self._dialog_dir()) / f"{stem}.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save the config", suggestion, "Patina config (*.json)")
        if not path:
            return False
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path.with_suffix(path.suffix + ".json") if path.suffix else path.with_suffix(".json")
        return self._write(path)

    def _write(self, path: Path) -> bool:
        self.flush_dataset_tab()
        values = self.form.values()
        try:
            save_config(path, values)
        except (OSError, PatinaError) as exc:
            QMessageBox.critical(self, "Cannot save", f"Could not write {path}:\n{exc}")
            return False
        self.path = path
        self.imported_from = None
        self.state.add_recent(path)
        self.state.last_dir = str(path.parent)
        self._mark_clean()
        self._persist_state()
        errs = self.form.errors()
        note = f" — {len(errs)} setting(s) still need fixing before training" if errs else ""
        self.statusBar().showMessage(f"Saved {path}{note}", 6000)
        return True

    def export_kohya(self) -> None:
        stem = str(self.form.values().get("output_name") or "lora")
        path, _ = QFileDialog.getSaveFileName(self, "Export for kohya_ss", str(Path(self._dialog_dir()) /
                                                                              f"{stem}-kohya.json"),
                                              "kohya_ss config (*.json)")
        if not path:
            return
        try:
            notes = write_kohya(path, self.form.values())
        except (OSError, PatinaError, KeyError) as exc:
            QMessageBox.critical(self, "Cannot export", f"Could not write {path}:\n{exc}")
            return
        msg = f"Exported {path}."
        if notes:
            self._show_report("Exported for kohya_ss", msg + " Notes on what kohya_ss handles differently:",
                              "\n".join(f"- {n}" for n in notes))
        else:
            self.statusBar().showMessage(msg, 6000)

    def _training_folder(self) -> str:
        """The project folder around the image folder (``<training>/img`` → ``<training>``), if it exists."""
        img = str(self.form.values().get("train_data_dir") or "").strip()
        if not img:
            return ""
        parent = Path(os.path.expanduser(img)).parent
        return str(parent) if parent.is_dir() and parent != Path(parent.anchor) else ""

    def _dialog_dir(self) -> str:
        for d in (self.state.last_dir, str(self.path.parent) if self.path else ""):
            if d and Path(d).is_dir():
                return d
        return str(Path.home())

    # -- presets and recent files --------------------------------------------------------------------------------

    def _fill_presets_menu(self) -> None:
        m = self.presets_menu
        m.clear()
        try:
            presets = list_presets()
        except OSError:
            presets = []
        builtin = [p for p in presets if p.builtin]
        user = [p for p in presets if not p.builtin]
        if builtin:
            m.addSection("Built-in")
        for p in builtin:
            self._preset_action(m, p)
        if user:
            m.addSection("My presets")
        for p in user:
            self._preset_action(m, p)
        if not presets:
            a = m.addAction("No presets found")
            a.setEnabled(False)
        m.addSeparator()
        m.addAction(self.act_save_preset)
        m.addAction(self.act_import_kohya_presets)
        m.addAction(self.act_open_presets)

    def _preset_action(self, menu: QMenu, preset) -> QAction:
        a = menu.addAction(preset.name)
        if preset.description:
            a.setToolTip(preset.description)
            a.setStatusTip(preset.description)
        a.triggered.connect(lambda _=False, p=preset.path: self.apply_preset_file(p))
        return a

    def apply_preset_file(self, path: str | os.PathLike) -> bool:
        """Apply a preset onto the current settings (paths, names and prompts are kept)."""
        try:
            result: LoadResult = apply_preset(self.form.values(), path)
        except PatinaError as exc:
            QMessageBox.critical(self, "Cannot apply the preset", str(exc))
            return False
        self.form.set_values(result.values)
        self._form_changed()
        name = Path(path).stem
        for p in list_presets():
            if Path(p.path) == Path(path):
                name = p.name
        if result.errors:
            self._show_report("Preset applied with problems", f"The preset <b>{name}</b> has invalid settings; "
                              "they kept their defaults.", format_load_report(result, Path(path).name))
        self.statusBar().showMessage(f"Applied preset “{name}” (your paths, names and prompts were kept).", 6000)
        return True

    def save_as_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset",
                                        "Preset name (the training settings are saved, not your paths):")
        name = (name or "").strip()
        if not ok or not name:
            return
        existing = [p for p in list_presets() if not p.builtin and p.name == name]
        if existing:
            answer = QMessageBox.question(self, "Replace preset?", f"A preset named “{name}” exists. Replace it?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            path = save_user_preset(name, self.form.values())
        except (OSError, PatinaError) as exc:
            QMessageBox.critical(self, "Cannot save the preset", str(exc))
            return
        self.statusBar().showMessage(f"Saved preset “{name}” to {path}", 6000)

    def import_kohya_presets(self, folder: str | os.PathLike | None = None) -> None:
        """File ▸ Import kohya_ss presets…: every JSON of a kohya_ss presets folder into My presets, then one
        report (imported cleanly, with notes, refused and why)."""
        from patina.core.config.kohya_folder import import_kohya_folder

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Import kohya_ss presets (choose kohya_ss/presets/lora)",
                                                      self._dialog_dir())
            if not folder:
                return
        try:
            report = import_kohya_folder(folder)
        except (OSError, PatinaError) as exc:
            QMessageBox.critical(self, "Cannot import the kohya_ss presets", str(exc))
            return
        self._fill_presets_menu()
        refused = len(report.outcomes) - report.imported
        heading = (f"<b>{report.imported} kohya_ss preset(s) are now in My presets</b> (Presets menu)"
                   + (f"; {refused} file(s) were refused." if refused else ".")
                   + f"<br><small>From {escape(str(report.folder))}</small>")
        self.statusBar().showMessage(f"Imported {report.imported} kohya_ss preset(s) into My presets", 6000)
        self._show_report("kohya_ss presets imported", heading, report.text(), folder_report_html(report))

    def _open_presets_folder(self) -> None:
        d = user_presets_dir()
        d.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(d)))

    def _fill_recent_menu(self) -> None:
        m = self.recent_menu
        m.clear()
        if not self.state.recent:
            a = m.addAction("No recent files")
            a.setEnabled(False)
            return
        for i, path in enumerate(self.state.recent):
            label = f"&{i + 1}  {Path(path).name}" if i < 9 else Path(path).name
            a = m.addAction(label)
            a.setToolTip(path)
            a.setStatusTip(path)
            a.triggered.connect(lambda _=False, p=path: self.open_recent(p))
        m.addSeparator()
        m.addAction("Clear recent files", self._clear_recent)

    def open_recent(self, path: str) -> None:
        if not Path(path).is_file():
            QMessageBox.warning(self, "File not found", f"{path}\nno longer exists; it was removed from the list.")
            self.state.remove_recent(path)
            return
        if self.maybe_save("opening another file"):
            self.open_file(path)

    def _clear_recent(self) -> None:
        self.state.recent = []
