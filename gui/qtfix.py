"""Workaround for a PySide6 6.12.0 reference-count bug on Python < 3.12 (pyproject pins <6.12; this
guards users who upgrade PySide6 by hand). Imported by patina.gui.app before the window is built."""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

# --- PySide6 workaround ------------------------------------------------------------------------------
# PySide6 6.12.0 on Python < 3.12 drops a reference to None on every call of a void Qt method from Python
# (painter.setPen, ...) and one to True on every Python-side ``signal.emit()``; after some thousands of
# calls Python aborts with "none_dealloc" / "bool_dealloc". 6.11 does not, and on Python 3.12+ these
# objects are immortal so it does no harm. When a probe shows the leak, the three singletons get a
# reference count no program can use up, which is what Python 3.12 does for them.

def _guard_singleton_refcounts() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    n = 64
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(n):
        probe.setObjectName("probe")
        probe.ping.emit()
    leaks = (none_before - sys.getrefcount(None) >= n // 2) or (true_before - sys.getrefcount(True) >= n // 2)
    if not leaks:
        return False
    for obj in (None, True, False):
        field = ctypes.c_ssize_t.from_address(id(obj))   # ob_refcnt is the first field of every object
        if field.value != sys.getrefcount(obj) - 1:      # (-1: getrefcount's own argument)
            return False                                 # unexpected layout: leave it alone
        field.value += 1 << 40
    return True


PYSIDE_REFCOUNT_GUARD = _guard_singleton_refcounts()
