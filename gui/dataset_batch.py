"""The Dataset tab's batch caption edits: find/replace and prefix/postfix over every caption file of a
concept folder (or of all), and creating the caption files such an edit left alone, each as one undo
step. A part of :class:`patina.gui.dataset_tab.DatasetTab`, kept apart because it is one job: it uses
the tab's model, batch panel, caption store and undo stack, and nothing else here owns state.
"""

from __future__ import annotations

from patina.core.dataset.caption_edits import (APPLIED, MISSING, UNCHANGED, CaptionChange, add_postfix, add_prefix,
                                              replace_text)
from patina.core.dataset.listing import ImageItem
from patina.gui.caption_batch import SCOPE_FOLDER
from patina.gui.caption_editor import CaptionCommand

class BatchCaptionEdits:
    """Mixed into DatasetTab (which sets ``_batch_running``, ``_create_offer`` and ``last_batch_result``)."""

    def _on_prefix(self, text: str, as_tag: bool, scope: str) -> None:
        self.add_to_captions(text, as_tag, scope, at_start=True)

    def _on_postfix(self, text: str, as_tag: bool, scope: str) -> None:
        self.add_to_captions(text, as_tag, scope, at_start=False)

    def _scope_items(self, scope: str) -> list[ImageItem]:
        folder = self._scope_folder() if scope == SCOPE_FOLDER else None
        return [it for it in self.model.items() if folder is None or it.folder == folder]

    def _scope_folder(self) -> str | None:
        if self.proxy.folder is not None:
            return self.proxy.folder
        item = self.caption_panel.item
        return item.folder if item is not None else None

    def replace_in_captions(self, find: str, replacement: str, match_case: bool = False,
                            scope: str = SCOPE_FOLDER) -> None:
        """Replace *find* in every caption file of the scope (one undo step)."""
        if not find:
            return

        def transform(text: str):
            new, n = replace_text(text, find, replacement, match_case)
            return (new, n) if n else (None, 0)

        self._run_batch(scope, transform, ("replace", find, replacement))

    def add_to_captions(self, text: str, as_tag: bool = True, scope: str = SCOPE_FOLDER, *,
                        at_start: bool = True) -> None:
        """Add *text* to the start (or end) of every caption file of the scope (one undo step)."""
        if not text.strip(" ,"):
            self.batch_panel.show_result("Type the text to add first.", error=True)
            return
        fn = add_prefix if at_start else add_postfix
        self._run_batch(scope, lambda old: (fn(old, text, as_tag), 1), ("prefix" if at_start else "postfix", text))

    def _run_batch(self, scope: str, transform, what: tuple) -> None:
        if self._batch_running:
            return
        self.flush()
        items = self._scope_items(scope)
        if not items:
            self.batch_panel.show_result("No images in this folder.", error=True)
            return
        changes = [CaptionChange(it.path, it.caption_file, transform=transform, create=False) for it in items]
        self._submit_batch(changes, what)

    def _submit_batch(self, changes: list, what: tuple) -> None:
        self._create_offer = None
        self.batch_panel.offer_create(0)
        self._batch_running = True
        self._set_batch_busy(True)
        self.batch_panel.show_result(f"Working on {len(changes):,} captions…")
        self.store.submit(changes, True, tag=("batch", what, changes))

    def create_missing_captions(self) -> None:
        """Create the caption files a batch edit left alone: each starts from its folder's name (instance
        and class, e.g. "sks dog", what training uses for it now) with the same edit applied. Only on
        the user's click; one undo step."""
        offer, self._create_offer = self._create_offer, None
        self.batch_panel.offer_create(0)
        if not offer or self._batch_running:
            return
        self.flush()

        def starting_from(tokens: str, transform):
            def make(old: str):
                base = old if old.strip() else tokens
                new, count = transform(base)
                return (base if new is None else new), max(1, count)
            return make

        changes = [CaptionChange(it.path, it.caption_file, transform=starting_from(it.tokens, tr), create=True)
                   for it, tr in offer if not it.caption_file.exists()]
        if changes:
            self._submit_batch(changes, ("create", len(changes)))

    def _finish_batch(self, tag, result) -> None:
        _kind, what, changes = tag
        self._batch_running = False
        self._set_batch_busy(False)
        applied = [c for c in changes if c.state == APPLIED]
        unchanged = sum(1 for c in changes if c.state == UNCHANGED)
        missing = sum(1 for c in changes if c.state == MISSING)
        if what[0] == "create":
            label = f"Create {len(applied)} caption files"
            msg = f"Created {len(applied)} caption file(s) from the folder names."
        elif what[0] == "replace":
            _k, find, repl = what
            label = f"Replace “{_short(find)}” with “{_short(repl)}” in {len(applied)} captions"
            if applied:
                msg = f"Replaced “{find}” {result.count} times in {len(applied)} caption(s)."
            else:
                msg = f"No caption contains “{find}”."
        else:
            kind, text = what
            where = "start" if kind == "prefix" else "end"
            label = f"Add “{_short(text)}” to the {where} of {len(applied)} captions"
            msg = f"Added “{text}” to the {where} of {len(applied)} caption(s)."
            if unchanged:
                msg += f" {unchanged} already had it."
        if missing:
            msg += f" {missing} image(s) without a caption file were left alone."
            by_path = {str(it.path): it for it in self.model.items()}
            self._create_offer = [(by_path[str(c.image)], c.transform) for c in changes
                                  if c.state == MISSING and str(c.image) in by_path]
            self.batch_panel.offer_create(len(self._create_offer))
        if result.errors:
            msg += f" {len(result.errors)} file(s) could not be changed: {result.errors[0]}"
        if applied:
            msg += " Undo with Ctrl+Z."
            self.undo_stack.push(CaptionCommand(self.store, applied, label, applied=True, tag="undo"))
        self.batch_panel.show_result(msg, error=bool(result.errors))
        self._set_status(msg, error=bool(result.errors))
        self.last_batch_result = (len(applied), result.count, unchanged, missing)

    def _set_batch_busy(self, busy: bool) -> None:
        self.batch_panel.set_busy(busy)
        self.caption_panel.set_read_only(busy)
        self._sync_undo_actions()

def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
