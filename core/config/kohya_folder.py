"""Import a whole kohya_ss presets folder into My presets, with one report.

kohya_ss keeps its LoRA presets in ``presets/lora/`` and the user's own in ``presets/lora/user_presets/``;
:func:`import_kohya_folder` reads every ``.json`` under the folder given (sub-folders included), imports
each through :func:`patina.core.config.files.import_kohya` and saves it as a user preset. Each file ends up
in one of three groups: imported cleanly, imported with notes (what was mapped, not carried over or has no
effect), or refused with the reason (a type Patina does not train, not a kohya_ss preset, broken JSON, an
invalid setting). A name already in the preset list is never overwritten: the new preset gets " (2)", " (3)"…
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from patina.core.config import files as cfgmod
from patina.core.errors import PatinaError

CLEAN, NOTES, REFUSED = "clean", "notes", "refused"
GROUP_TITLES = {CLEAN: "Imported cleanly", NOTES: "Imported with notes", REFUSED: "Refused"}


@dataclass
class PresetOutcome:
    """What happened to one kohya_ss file."""

    source: str                  # the file, relative to the folder imported
    status: str                  # CLEAN, NOTES or REFUSED
    name: str = ""               # the preset's name in My presets (empty when refused)
    lines: list[str] = field(default_factory=list)  # the notes, or why it was refused


@dataclass
class FolderImport:
    folder: Path
    outcomes: list[PresetOutcome] = field(default_factory=list)

    def group(self, status: str) -> list[PresetOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def imported(self) -> int:
        return sum(o.status != REFUSED for o in self.outcomes)

    def headline(self) -> str:
        counts = ", ".join(f"{len(self.group(s))} {GROUP_TITLES[s].lower()}" for s in (CLEAN, NOTES, REFUSED))
        return f"{len(self.outcomes)} kohya_ss preset file(s) in {self.folder}: {counts}."

    def text(self) -> str:
        """The report, plain text (the CLI prints it; the window shows the same groups)."""
        lines = [self.headline()]
        for status in (CLEAN, NOTES, REFUSED):
            items = self.group(status)
            if items:
                lines += ["", f"{GROUP_TITLES[status]} ({len(items)}):"]
            for o in items:
                lines.append(f"  {o.source}" + (f" → “{o.name}”" if o.name else ""))
                lines += [f"      {line}" for line in o.lines]
        return "\n".join(lines)


def _unique_name(wanted: str, taken: set[str]) -> str:
    name, n = wanted, 1
    while name.lower() in taken:
        n += 1
        name = f"{wanted} ({n})"
    return name


def _refusal(result: cfgmod.LoadResult) -> str | None:
    """Why an imported file cannot become a preset: a type Patina does not train, or invalid settings."""
    for p in result.errors:
        if p.message.startswith(cfgmod.REFUSED_TYPE_PREFIX):
            return p.message
    if result.errors:
        return f"{len(result.errors)} invalid setting(s): " + "; ".join(str(p) for p in result.errors)
    return None


def _import_one(path: Path, rel: str, taken: set[str]) -> PresetOutcome:
    try:
        data = cfgmod._read_json(path)
    except PatinaError as exc:
        return PresetOutcome(rel, REFUSED, lines=[str(exc).replace(f"{path} ", "", 1)])
    if not cfgmod.looks_like_kohya(data):
        why = ("a Patina preset or config, not a kohya_ss one (open it with File ▸ Open…)" if "schema_version" in data
               else "not a kohya_ss preset: it has none of the keys kohya_ss writes (LoRA_type, save_model_as…)")
        return PresetOutcome(rel, REFUSED, lines=[why])
    result = cfgmod.import_kohya(data)
    why = _refusal(result)
    if why:
        return PresetOutcome(rel, REFUSED, lines=[why])
    lines = cfgmod.import_notes(result)
    name = _unique_name(path.stem, taken)
    if name != path.stem:
        lines.append(f"saved as “{name}”: a preset named “{path.stem}” already exists and was left as it is")
    cfgmod.save_user_preset(name, result.values, description=f"Imported from kohya_ss preset {rel}")
    taken.add(name.lower())
    return PresetOutcome(rel, NOTES if lines else CLEAN, name, lines)


def import_kohya_folder(folder: str | Path) -> FolderImport:
    """Import every kohya_ss JSON under *folder* (``user_presets/`` and other sub-folders too) into My presets.

    Raises :class:`PatinaError` only when *folder* is not a folder or holds no ``.json`` file; every file's own
    problem is in the report."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PatinaError(f"{root} is not a folder. Choose kohya_ss's presets folder (presets/lora).")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".json" and p.is_file())
    if not paths:
        raise PatinaError(f"{root} holds no .json preset files. kohya_ss keeps its LoRA presets in presets/lora.")
    taken = {n.lower() for p in cfgmod.list_presets() for n in (p.name, p.path.stem)}
    report = FolderImport(root)
    for path in paths:
        report.outcomes.append(_import_one(path, path.relative_to(root).as_posix(), taken))
    return report
