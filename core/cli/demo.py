"""``patina demo``: train a LoRA on the shipped demo model in a few minutes, with its quality report.

The demo folder (images + config) is made by patina.core.demo.setup. With a display, ``patina`` opens the window
with the demo loaded and training (patina.gui.launcher handles that before this module is reached); here, and
with ``--headless``, the demo trains in the terminal and ends with the quality table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a LoRA on the built-in demo model (a few minutes on a CPU)",
                       description="Copy the demo images and a ready config into a new folder, train a LoRA on "
                                   "Patina's tiny built-in model with samples and a quality report every epoch, and "
                                   "print the results. Opens the window when a display is available.")
    p.add_argument("--out", metavar="DIR", help="folder for the demo (default: a new 'Patina demo' folder in your "
                                                 "Documents or home folder)")
    p.add_argument("--headless", action="store_true", help="train in the terminal even when a display is available")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def prepare_from_args(args) -> "object":
    """Make the demo folder for parsed *args* and say where it is; returns the DemoFolder."""
    from patina.core.demo.setup import prepare

    folder = prepare(args.out)
    print(f"Demo folder: {folder.root}\nConfig: {folder.config_path}", flush=True)
    return folder


def run(args) -> int:
    from patina.core.cli.train import Printer, quiet_libraries, train_until_ctrl_c

    folder = prepare_from_args(args)
    quiet_libraries()
    from patina.core.train.quality import format_table

    started = time.time()
    fin = train_until_ctrl_c(folder.config, Printer(args.quiet), overwrite=True)
    minutes = (time.time() - started) / 60
    print(fin.message, flush=True)
    if fin.status != "finished":
        return 0 if fin.status == "stopped" else 1
    out = Path(folder.config["output_dir"])
    report_path = out / f"{folder.config['output_name']}-quality.json"
    if report_path.is_file():
        import json

        report = json.loads(report_path.read_text(encoding="utf-8"))
        print("\nQuality report (see README, 'Reading the quality report'):")
        print(format_table(report))
        print(f"\nReport: {report_path}\nGrid:   {out / report['grid']}")
    print(f"Samples: {out / 'sample'}\nThe demo took {minutes:.1f} minutes.")
    return 0
