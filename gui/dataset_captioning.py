"""The Dataset tab's auto-captioning: opens :class:`patina.gui.caption_dialog.CaptionDialog` on the shown folder,
keeps caption edits out while a run writes, and turns the run into one undo step. A part of
:class:`patina.gui.dataset_tab.DatasetTab` (it uses the tab's model, caption store, undo stack and status)."""

from __future__ import annotations

from patina.gui.caption_editor import CaptionCommand


class AutoCaptioning:
    """Mixed into DatasetTab (which sets ``caption_dialog = None``)."""

    def open_caption_dialog(self):
        """Open the "Caption images" dialog for the folder shown (non-blocking); returns it."""
        from patina.gui.caption_dialog import CaptionDialog

        if self.caption_dialog is not None and self.caption_dialog.isVisible():
            self.caption_dialog.raise_()
            self.caption_dialog.activateWindow()
            return self.caption_dialog
        self.flush()
        self.caption_dialog = dialog = CaptionDialog(self._root, self._ext, self)
        dialog.set_values(self._state.get("captioning", {}))
        dialog.run_started.connect(self._caption_run_started)
        dialog.run_finished.connect(self._caption_run_finished)
        dialog.finished.connect(lambda _result: self._remember_captioning(dialog.values()))
        self.caption_dialog.open()
        return self.caption_dialog

    def _remember_captioning(self, values: dict) -> None:
        self._state["captioning"] = values
        self._save_state()

    def _caption_run_started(self) -> None:
        self.flush()
        self._batch_running = True
        self._set_batch_busy(True)
        self._set_status("Captioning images…")

    def _caption_run_finished(self, report) -> None:
        self._batch_running = False
        self._set_batch_busy(False)
        if report is None:
            self._set_status("Captioning failed; see the dialog.", error=True)
            return
        captions = {str(r.image): (r.new, None) for r in report.results if r.action == "written"}
        self.model.set_captions(captions)
        item = self.caption_panel.item
        if item is not None and str(item.path) in captions:
            self.caption_panel.reload_text(captions[str(item.path)][0])
        if report.changes:
            self.undo_stack.push(CaptionCommand(self.store, list(report.changes),
                                                f"Caption {len(report.changes)} images", applied=True, tag="undo"))
        self._set_status(report.summary() + (". Undo with Ctrl+Z." if report.changes else "."))
        self._schedule_updates()
