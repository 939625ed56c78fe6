"""User-facing errors.

A :class:`PatinaError` carries a message written for the person using the app: what went wrong,
which file or field, and what to do. The CLI prints it as one paragraph and exits non-zero; the GUI
shows it in a dialog. Anything else that escapes is a bug and may show a traceback.
"""

from __future__ import annotations


class PatinaError(Exception):
    """An error caused by user input (a file, a folder, a setting), with a message meant for them."""

    exit_code = 2

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def __str__(self) -> str:  # pragma: no cover - trivial
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
