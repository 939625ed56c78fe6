"""``patina config …``: create, validate, import and export configs; list presets."""

from __future__ import annotations

import argparse
from pathlib import Path

from patina.core.config import files as cfgmod
from patina.core.errors import PatinaError
from patina.core.config.schema import defaults


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="create, check, import and export training configs and presets")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")

    v = csub.add_parser("validate", help="check a Patina or kohya_ss config and print every problem")
    v.add_argument("file")
    v.set_defaults(handler=_validate)

    i = csub.add_parser("import-kohya", help="convert a kohya_ss LoRA JSON into a Patina config")
    i.add_argument("kohya_json")
    i.add_argument("out_json")
    i.set_defaults(handler=_import_kohya)

    f = csub.add_parser("import-kohya-folder",
                        help="import every kohya_ss preset JSON of a folder (and its user_presets/) into My presets")
    f.add_argument("folder", help="kohya_ss's presets folder, e.g. kohya_ss/presets/lora")
    f.set_defaults(handler=_import_kohya_folder)

    e = csub.add_parser("export-kohya", help="write a kohya_ss-loadable JSON from a Patina config")
    e.add_argument("patina_json")
    e.add_argument("out_json")
    e.set_defaults(handler=_export_kohya)

    n = csub.add_parser("new", help="write a new config from the defaults, a preset and --set values")
    n.add_argument("out_json")
    n.add_argument("--preset", help="name of a built-in or user preset (see `patina config presets`)")
    n.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    n.set_defaults(handler=_new)

    ls = csub.add_parser("presets", help="list built-in and user presets")
    ls.set_defaults(handler=_presets)

    sp = csub.add_parser("save-preset", help="save a config's settings (without paths) as a user preset")
    sp.add_argument("config_json")
    sp.add_argument("name")
    sp.set_defaults(handler=_save_preset)

    p.set_defaults(handler=lambda a: (p.print_help(), 0)[1])


def _refuse_same(src: str, dst: str) -> None:
    if Path(src).resolve() == Path(dst).resolve():
        raise PatinaError(f"The output file {dst} is the input file; choose another output name so the original stays.")


def _validate(args) -> int:
    from patina.core.train.preflight import config_checks, probe_device

    result = cfgmod.read_config(args.file)
    result.problems.extend(config_checks(result.values, probe_device()))
    print(cfgmod.format_load_report(result, args.file))
    return 0 if result.ok else 2


def _import_kohya(args) -> int:
    _refuse_same(args.kohya_json, args.out_json)
    data = cfgmod._read_json(args.kohya_json)
    result = cfgmod.import_kohya(data)
    print(cfgmod.format_load_report(result, args.kohya_json))
    cfgmod.save_config(args.out_json, result.values)
    if result.errors:
        print(f"Wrote {args.out_json}; the invalid settings listed above took Patina's defaults — check them.")
        return 1
    print(f"Wrote {args.out_json}.")
    return 0


def _import_kohya_folder(args) -> int:
    from patina.core.config.kohya_folder import import_kohya_folder

    report = import_kohya_folder(args.folder)
    print(report.text())
    return 0 if report.imported else 1


def _export_kohya(args) -> int:
    _refuse_same(args.patina_json, args.out_json)
    result = cfgmod.load_config(args.patina_json)
    notes = cfgmod.write_kohya(args.out_json, result.values)
    for note in notes:
        print(f"  note: {note}")
    print(f"Wrote {args.out_json} (kohya_ss LoRA JSON).")
    return 0


def _new(args) -> int:
    from patina.core.train.preflight import machine_defaults, probe_device

    values = defaults()
    # Defaults this machine cannot run (AdamW8bit and fp16 without CUDA) are replaced, and the output says so.
    changes, note = machine_defaults(probe_device())
    values.update(changes)
    if args.preset:
        values = cfgmod.apply_preset(values, cfgmod.find_preset(args.preset).path).values
        for key, value in changes.items():  # a preset's own choice wins; a preset without one keeps the machine's
            if values[key] == defaults()[key]:
                values[key] = value
    values = cfgmod.apply_overrides(values, args.sets)
    set_keys = {item.partition("=")[0].strip() for item in args.sets}
    applied = {k: v for k, v in changes.items() if values.get(k) == v and k not in set_keys}
    cfgmod.save_config(args.out_json, values)
    if applied:
        print(f"Note: {note} ({', '.join(f'{k} = {v}' for k, v in applied.items())})")
    print(f"Wrote {args.out_json}.")
    return 0


def _presets(args) -> int:
    for p in cfgmod.list_presets():
        kind = "built-in" if p.builtin else "user"
        print(f"{p.name:34} {kind:8} {p.description}")
    return 0


def _save_preset(args) -> int:
    result = cfgmod.load_config(args.config_json)
    path = cfgmod.save_user_preset(args.name, result.values)
    print(f"Saved preset \"{args.name}\" to {path}.")
    return 0
