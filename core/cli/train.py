"""``patina train``, ``patina verify`` and ``patina bench``."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from patina.core.errors import PatinaError


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a LoRA from a config/preset JSON (Ctrl+C stops and saves)")
    t.add_argument("config", help="Patina config JSON (a kohya_ss config is imported on the fly)")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train_batch_size=2 (repeatable)")
    t.add_argument("--resume", metavar="DIR", help="continue from a <name>-state folder")
    t.add_argument("--overwrite", action="store_true", help="replace an existing <output_name>.safetensors")
    t.add_argument("--quiet", action="store_true", help="no progress bar, only the plan and the result")
    t.add_argument("--dry-run", "--plan", action="store_true",
                   help="check everything and print the plan, with the VRAM estimate, without training (exit 2 if "
                        "something must be fixed)")
    t.set_defaults(handler=_train)

    v = sub.add_parser("verify", help="inspect a LoRA file: modules, ranks, alphas, metadata, problems")
    v.add_argument("file")
    v.add_argument("--model", metavar="PATH", default=None,
                   help="also check every module's shape against this base model (file or diffusers folder)")
    v.set_defaults(handler=_verify)

    b = sub.add_parser("bench", help="measure training speed with random weights (nothing downloaded)")
    b.add_argument("--model", choices=("tiny", "sd15", "sdxl"), default="tiny")
    b.add_argument("--resolution", type=int, default=None, help="square image size (default 512; sdxl 1024; tiny 64)")
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--gradient-checkpointing", action="store_true")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=3, help="steps not timed")
    b.add_argument("--rank", type=int, default=16)
    b.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                   help="default: bf16 on CUDA, fp32 on CPU")
    b.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense peak (bf16) for the MFU figure; default from a small table")
    b.set_defaults(handler=_bench)


class Printer:
    """Turns engine events into terminal output: a tqdm bar plus log lines."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.warned: set[str] = set()   # warnings already printed: the plan does not print them again

    def __call__(self, ev) -> None:
        from patina.core.train import events as E

        if isinstance(ev, E.Plan):
            print(self._plan_text(ev.text), flush=True)
        elif isinstance(ev, E.Log):
            if ev.level == "warning":
                self.warned.add(ev.text.strip())
            self._write(("warning: " if ev.level == "warning" else "") + ev.text)
        elif isinstance(ev, E.Status) and ev.phase not in ("training", "done"):
            self._write(ev.text)
        elif isinstance(ev, E.Progress) and not self.quiet:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=ev.total_steps, initial=ev.step - 1, unit="step", dynamic_ncols=True)
            self.bar.n = ev.step
            self.bar.set_postfix_str(f"epoch {ev.epoch}/{ev.total_epochs} {ev.images_per_sec:.2f} img/s",
                                     refresh=False)
            self.bar.refresh()
        elif isinstance(ev, E.Metrics) and self.bar is not None:
            self.bar.set_description(f"loss {ev.avg_loss:.4f}", refresh=False)
        elif isinstance(ev, E.Saved):
            self._write(f"saved {ev.path}")
        elif isinstance(ev, E.Sample):
            self._write(f"sample {ev.path}")
        elif isinstance(ev, E.Quality):
            from patina.core.train.quality import epoch_line

            self._write(epoch_line(ev.report))
        elif isinstance(ev, E.Finished):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def _plan_text(self, text: str) -> str:
        """The plan without the warnings printed just before it (its "Warnings:" heading goes when empty)."""
        lines = [ln for ln in text.splitlines() if ln.strip() not in self.warned]
        return "\n".join(ln for i, ln in enumerate(lines)
                         if not (ln.strip() == "Warnings:" and (i + 1 == len(lines) or not lines[i + 1].startswith("    "))))

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)


def train_until_ctrl_c(values: dict, printer: "Printer", *, resume: str | None = None, overwrite: bool = False):
    """Train in the terminal: the first Ctrl+C stops after the current step and saves, a second one aborts."""
    from patina.core.train.engine import train
    from patina.core.train.events import Commands

    commands = Commands()

    def on_sigint(signum, frame):
        if commands.stop_requested:
            raise KeyboardInterrupt
        print("\nStopping after this step and saving… (Ctrl+C again to abort without saving)", file=sys.stderr)
        commands.request_stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        return train(values, printer, commands, resume=resume, overwrite=overwrite)
    finally:
        signal.signal(signal.SIGINT, old)


def quiet_libraries() -> None:
    """Keep the terminal for Patina's own progress: no library progress bars or advisory warnings."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()


def _train(args) -> int:
    quiet_libraries()
    from patina.core.config.files import apply_overrides, format_load_report, read_config

    result = read_config(args.config)
    if result.kohya or result.unknown or result.warnings:
        print(format_load_report(result, args.config))
    # A config with errors is refused, as the window refuses it: every invalid setting is listed (one that a
    # --set replaces no longer counts).
    overridden = {item.partition("=")[0].strip() for item in args.sets}
    file_errors = [p for p in result.errors if p.key not in overridden]
    values = apply_overrides(result.values, args.sets)
    from patina.core.config.schema import check_values, errors

    if args.resume:
        values["resume"] = ""  # the folder comes from --resume
    # checked once here; the engine takes the checked config (a ValidConfig) without checking it again
    checked, problems = check_values(values)
    bad = file_errors + [p for p in errors(problems) if all(p.key != f.key for f in file_errors)]
    if bad:
        raise PatinaError(f"{args.config} has {len(bad)} invalid setting(s); nothing was trained. Fix them in the "
                          "file or with --set key=value:", problems=[str(p) for p in bad])
    values = checked
    if args.dry_run:
        return _dry_run(args, values)

    fin = train_until_ctrl_c(values, Printer(args.quiet), resume=args.resume, overwrite=args.overwrite)
    stream = sys.stderr if fin.status == "failed" else sys.stdout
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(fin.message, file=stream)
    return {"finished": 0, "stopped": 0, "failed": 1}[fin.status]


def _dry_run(args, values: dict) -> int:
    from patina.core.train.engine import plan

    if args.resume:
        values = dict(values, resume=args.resume)
    p = plan(values)
    print(p.text)
    errs = [x for x in p.problems if x.severity == "error"]
    if errs:
        print(f"{len(errs)} problem(s) must be fixed before training.", file=sys.stderr)
        return 2
    print("Everything checked: ready to train.")
    return 0


def _verify(args) -> int:
    from patina.core.lora.verify import format_verify_report, verify_lora

    report = verify_lora(args.file, model=args.model)
    print(format_verify_report(report))
    return 0 if report.ok else 1


def _bench(args) -> int:
    bad = []
    if args.batch_size < 1:
        bad.append(f"--batch-size {args.batch_size}: must be 1 or more")
    if args.steps < 1:
        bad.append(f"--steps {args.steps}: must be 1 or more")
    if args.warmup < 0:
        bad.append(f"--warmup {args.warmup}: must be 0 or more")
    if args.rank < 1:
        bad.append(f"--rank {args.rank}: must be 1 or more")
    if args.resolution is not None and (args.resolution < 64 or args.resolution > 4096 or args.resolution % 8):
        bad.append(f"--resolution {args.resolution}: must be a multiple of 8 from 64 to 4096 (e.g. 512)")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        bad.append(f"--peak-tflops {args.peak_tflops}: must be above 0")
    if bad:
        raise PatinaError("bench: some arguments are not valid:", problems=bad)
    from patina.core.train.bench import run_bench

    result = run_bench(model=args.model, resolution=args.resolution, batch_size=args.batch_size,
                       gradient_checkpointing=args.gradient_checkpointing, steps=args.steps, warmup=args.warmup,
                       rank=args.rank, precision=args.precision, peak_tflops=args.peak_tflops)
    print(json.dumps(result, indent=2))
    return 0
