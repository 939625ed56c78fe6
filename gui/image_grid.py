"""The thumbnail grid of the Dataset tab: a list model of the images in the concept folders, a filter
proxy (concept folder + caption text), a delegate that paints thumbnails with their badges, and the
``QListView`` in icon mode that shows them.

The rows come from :func:`patina.core.dataset.listing.list_dataset`, which reads only names; captions, image checks and thumbnails arrive later
from background threads and update single rows. Nothing here writes a file.
"""

from __future__ import annotations

from html import escape
from collections import OrderedDict

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPoint, QRect, QSize, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate

from patina.core.dataset.images import ImageCheck
from patina.core.dataset.listing import ImageItem

TILE_PX = 128            # thumbnail box in the grid (logical pixels)
_PAD = 8
_TEXT_H = 20
PIXMAP_CACHE_ITEMS = 900  # decoded thumbnails kept in memory; the rest come back from the disk cache

REJECT_COLOR = QColor("#c62828")
NO_CAPTION_COLOR = QColor("#b26a00")

ItemRole = Qt.ItemDataRole.UserRole + 1


# --- model --------------------------------------------------------------------------------------------

class ImageListModel(QAbstractListModel):
    """One row per image. Thumbnails are asked for lazily, through *request_thumbnail(path)*, when a row is
    painted."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.request_thumbnail = None   # callable(path: str), set by the owner
        self._items: list[ImageItem] = []
        self._rows: dict[str, int] = {}
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._requested: set[str] = set()
        self._broken: dict[str, str] = {}
        self.tile_px = TILE_PX
        self.device_pixel_ratio = 1.0

    # reading
    def rowCount(self, parent=QModelIndex()):  # noqa: N802 (Qt name)
        return 0 if parent.isValid() else len(self._items)

    def items(self) -> list[ImageItem]:
        return self._items

    def item(self, row: int) -> ImageItem:
        return self._items[row]

    def row_of(self, path) -> int:
        return self._rows.get(str(path), -1)

    def item_for(self, path) -> ImageItem | None:
        row = self.row_of(path)
        return self._items[row] if row >= 0 else None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.name
        if role == ItemRole:
            return item
        if role == Qt.ItemDataRole.DecorationRole:
            return self.pixmap(item)
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(item)
        return None

    def pixmap(self, item: ImageItem) -> QPixmap | None:
        """The cached thumbnail of *item*, or None (and a background decode is asked for)."""
        key = str(item.path)
        pm = self._pixmaps.get(key)
        if pm is not None:
            self._pixmaps.move_to_end(key)
            return pm
        if key not in self._broken and key not in self._requested and self.request_thumbnail is not None:
            self._requested.add(key)
            self.request_thumbnail(key)
        return None

    def is_broken(self, item: ImageItem) -> bool:
        return str(item.path) in self._broken

    # changing
    def set_items(self, items: list[ImageItem]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self._rows = {str(it.path): i for i, it in enumerate(self._items)}
        self._requested.clear()
        self._broken.clear()
        self._pixmaps.clear()
        self.endResetModel()

    def _rows_changed(self, rows) -> None:
        """One dataChanged for the span of *rows* (each emit costs; a span repaints only what is visible)."""
        rows = list(rows)
        if rows:
            self.dataChanged.emit(self.index(min(rows)), self.index(max(rows)))

    def _row_changed(self, row: int) -> None:
        self._rows_changed([row])

    def set_thumbnail(self, path: str, image: QImage) -> None:
        self._requested.discard(path)
        row = self.row_of(path)
        if row < 0:
            return
        side = int(self.tile_px * self.device_pixel_ratio)
        if image.width() > side or image.height() > side:
            image = image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        pm = QPixmap.fromImage(image)
        pm.setDevicePixelRatio(self.device_pixel_ratio)
        self._pixmaps[path] = pm
        while len(self._pixmaps) > PIXMAP_CACHE_ITEMS:
            self._pixmaps.popitem(last=False)
        self._row_changed(row)

    def set_thumbnail_failed(self, path: str, reason: str) -> None:
        self._requested.discard(path)
        row = self.row_of(path)
        if row >= 0:
            self._broken[path] = reason
            self._row_changed(row)

    def forget_requests(self) -> None:
        """Thumbnails asked for but not delivered are asked for again when painted."""
        self._requested.clear()

    def set_captions(self, captions: dict[str, tuple[str | None, str | None]], *, only_unread: bool = False) -> None:
        """``{image path: (caption text or None when there is no file, warning)}``."""
        changed = []
        for path, (text, warning) in captions.items():
            row = self.row_of(path)
            if row < 0:
                continue
            item = self._items[row]
            if only_unread and item.caption is not None:
                continue
            if item.has_caption != (text is not None):
                changed.append(row)   # the "no caption" pill comes or goes
            item.caption = "" if text is None else text
            item.has_caption = text is not None
            item.caption_warning = warning
        self._rows_changed(changed)

    def set_checks(self, checks: list[ImageCheck]) -> None:
        changed = []
        for check in checks:
            row = self.row_of(check.path)
            if row >= 0:
                self._items[row].check = check
                if not check.ok:
                    changed.append(row)
        self._rows_changed(changed)


def tooltip(item: ImageItem) -> str:
    lines = [f"<b>{escape(item.name)}</b> — {escape(item.folder)}"]
    if item.check is not None and item.check.ok:
        lines.append(f"{item.check.width}×{item.check.height} {item.check.format}")
    if item.rejected:
        lines.append(f"<span style='color:{REJECT_COLOR.name()}'>Not used for training: {escape(item.reason)}</span>")
    if not item.has_caption:
        lines.append(f"No caption file — trains with the folder's words “{escape(item.tokens)}”")
    elif item.caption:
        text = item.caption.strip()
        lines.append(escape(text if len(text) <= 300 else text[:297] + "…").replace("\n", "<br>"))
    return "<br>".join(lines)



# --- filtering ------------------------------------------------------------------------------------------

class ImageFilterProxy(QSortFilterProxyModel):
    """Rows of one concept folder (or all) whose caption or file name contains every filter term.

    Terms are separated by commas and matched case-insensitively. The filter is re-applied only when it
    changes or :meth:`refilter` is called, so editing a caption never makes the selected row vanish.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDynamicSortFilter(False)
        self._folder: str | None = None
        self._terms: list[str] = []

    @property
    def folder(self) -> str | None:
        return self._folder

    @property
    def has_text_filter(self) -> bool:
        return bool(self._terms)

    def set_folder(self, folder: str | None) -> None:
        if folder != self._folder:
            self._folder = folder
            self.refilter()

    def set_text(self, text: str) -> None:
        terms = [t.strip().casefold() for t in text.split(",") if t.strip()]
        if terms != self._terms:
            self._terms = terms
            self.refilter()

    def refilter(self) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.9+
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    def accepts(self, item: ImageItem) -> bool:
        if self._folder is not None and item.folder != self._folder:
            return False
        if not self._terms:
            return True
        hay = ((item.caption or "") + "\n" + item.name).casefold()
        return all(t in hay for t in self._terms)

    def filterAcceptsRow(self, source_row, source_parent):  # noqa: N802 (Qt name)
        model = self.sourceModel()
        return self.accepts(model.item(source_row))

    def shown_items(self) -> list[ImageItem]:
        model = self.sourceModel()
        return [model.item(self.mapToSource(self.index(r, 0)).row()) for r in range(self.rowCount())]


# --- painting ----------------------------------------------------------------------------------------------

class ThumbnailDelegate(QStyledItemDelegate):
    """Paints a tile: thumbnail (or a placeholder), the file name, a red overlay and badge on images the
    dataset check rejected, and an amber "no caption" pill on images without a caption file."""

    def __init__(self, tile_px: int = TILE_PX, parent=None):
        super().__init__(parent)
        self.tile_px = tile_px

    def cell_size(self) -> QSize:
        return QSize(self.tile_px + 2 * _PAD, self.tile_px + _PAD + _TEXT_H + _PAD // 2)

    def sizeHint(self, option, index):  # noqa: N802 (Qt name)
        return self.cell_size()

    def paint(self, painter: QPainter, option, index) -> None:
        item: ImageItem = index.data(ItemRole)
        if item is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        r = option.rect
        pal = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            hl = QColor(pal.highlight().color())
            hl.setAlpha(70)
            painter.setPen(QPen(pal.highlight().color(), 2))
            painter.setBrush(hl)
            painter.drawRoundedRect(r.adjusted(2, 2, -2, -2), 6, 6)
        elif option.state & QStyle.StateFlag.State_MouseOver:
            hover = QColor(pal.highlight().color())
            hover.setAlpha(25)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(hover)
            painter.drawRoundedRect(r.adjusted(2, 2, -2, -2), 6, 6)

        box = QRect(r.left() + (r.width() - self.tile_px) // 2, r.top() + _PAD, self.tile_px, self.tile_px)
        pm = index.data(Qt.ItemDataRole.DecorationRole)
        model = index.model()
        source = model.sourceModel() if isinstance(model, QSortFilterProxyModel) else model
        if isinstance(pm, QPixmap) and not pm.isNull():
            size = pm.deviceIndependentSize().toSize()
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(box.center())
            painter.drawPixmap(target, pm)
            image_rect = target
        else:
            image_rect = box
            painter.fillRect(box, pal.midlight())   # opaque and square: cheap for a screenful of tiles
            broken = isinstance(source, ImageListModel) and source.is_broken(item)
            painter.setPen(QColor(127, 127, 127, 170))
            font = QFont(option.font)
            font.setPointSizeF(max(7.0, font.pointSizeF() * (1.6 if broken else 1.0)))
            painter.setFont(font)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "✕" if broken else "…")

        if item.rejected:
            veil = QColor(REJECT_COLOR)
            veil.setAlpha(90)
            painter.fillRect(image_rect, veil)
            painter.setPen(QPen(REJECT_COLOR, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(image_rect.adjusted(1, 1, -1, -1))
            badge = QRect(image_rect.right() - 22, image_rect.top() + 4, 18, 18)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(REJECT_COLOR)
            painter.drawEllipse(badge)
            painter.setPen(QColor("white"))
            bold = QFont(option.font)
            bold.setBold(True)
            painter.setFont(bold)
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "!")
        if not item.has_caption:
            small = QFont(option.font)
            small.setPointSizeF(max(6.5, small.pointSizeF() * 0.8))
            painter.setFont(small)
            fm = painter.fontMetrics()
            label = "no caption"
            pill = QRect(0, 0, fm.horizontalAdvance(label) + 10, fm.height() + 2)
            pill.moveBottomLeft(image_rect.bottomLeft() + QPoint(4, -4))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(NO_CAPTION_COLOR)
            painter.drawRoundedRect(pill, pill.height() / 2, pill.height() / 2)
            painter.setPen(QColor("white"))
            painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, label)

        text_rect = QRect(r.left() + 4, box.bottom() + 4, r.width() - 8, _TEXT_H)
        painter.setFont(option.font)
        # The selection is a light tint, so the normal text colour stays readable on it.
        color = REJECT_COLOR if item.rejected else pal.text().color()
        painter.setPen(color)
        name = option.fontMetrics.elidedText(item.name, Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, name)
        painter.restore()


class ImageGridView(QListView):
    """Icon-mode list with uniform tiles; scrolling only paints (and so only decodes) visible tiles."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.delegate = ThumbnailDelegate(TILE_PX, self)
        self.setItemDelegate(self.delegate)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setGridSize(self.delegate.cell_size())
        self.setSpacing(0)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
