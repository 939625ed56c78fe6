"""Render resources/icons/patina.svg to the PNG sizes the desktop entry and the window use, and to a
Windows .ico (PNG-compressed entries). Run once after changing the SVG:

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256)


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - needed for painting
    renderer = QSvgRenderer(str(ICONS / "patina.svg"))
    if not renderer.isValid():
        print("patina.svg could not be read", file=sys.stderr)
        return 1
    pngs: list[tuple[int, bytes]] = []
    for size in SIZES:
        img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(Qt.GlobalColor.transparent)
        painter = QPainter(img)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        img.save(buf, "PNG")
        buf.close()
        raw = bytes(data)
        (ICONS / f"patina-{size}.png").write_bytes(raw)
        pngs.append((size, raw))
    # ICO: header, one directory entry per image, then the PNG data (Windows Vista and later read PNG entries).
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = 6 + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, raw in pngs:
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(raw), offset + len(blobs))
        blobs += raw
    (ICONS / "patina.ico").write_bytes(header + entries + blobs)
    print(f"wrote {len(pngs)} PNGs and patina.ico to {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
