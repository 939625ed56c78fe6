"""``patina dataset caption FOLDER --model blip|blip-large|wd14[-variant]``: a first draft of every caption.

Models are never downloaded unless ``--download`` is given: without it a missing model ends with one line that
says how big the download is, where from, and where to put the files to work offline (exit code 2).
Ctrl+C stops after the current batch; what was written stays.
"""

from __future__ import annotations

import argparse
import signal
import sys

from patina.core.caption.models import BLIP, MODELS, get_model
from patina.core.errors import PatinaError

_TAGGER_ONLY = ("threshold", "character_threshold", "exclude_tags", "rating_tags", "max_tags")
_BLIP_ONLY = ("beams", "sampling", "top_p", "min_length", "max_length")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_caption_parser(sub, count) -> None:
    """``caption`` under ``patina dataset``; *count* parses whole numbers with a minimum."""
    c = sub.add_parser(
        "caption", help="write captions with BLIP (sentences) or the WD14 tagger (tags)",
        description="Caption the images of an image folder (its N_name subfolders, or the images in it) with "
                    "BLIP or the WD14 tagger. Existing captions are kept unless --mode says otherwise; images are "
                    "never changed. Models are downloaded only with --download.")
    c.add_argument("folder", metavar="FOLDER", help="the image folder (holding the N_name subfolders)")
    c.add_argument("--model", required=True, metavar="NAME",
                   help="blip, blip-large, wd14 (= wd14-swinv2-v3) or a WD14 variant: "
                        + ", ".join(n for n in MODELS if n.startswith("wd14-")))
    c.add_argument("--mode", default="skip", choices=("skip", "overwrite", "append"),
                   help="images that have a caption: skip them (default), overwrite it, or append new tags to it")
    c.add_argument("--model-dir", metavar="DIR", help="use the model files in this folder (downloaded elsewhere)")
    c.add_argument("--download", action="store_true", help="download the model if it is not on this computer")
    c.add_argument("--preview", type=count(1), metavar="N", help="caption the first N images and print, write nothing")
    c.add_argument("--batch-size", type=count(1), help="images per model call (BLIP 4, WD14 8)")
    c.add_argument("--prefix", default="", help="put first in every caption, e.g. the trigger word")
    c.add_argument("--suffix", default="", help="put last in every caption")
    c.add_argument("--caption-extension", default=".txt", help="caption file extension (default .txt)")
    c.add_argument("--device", default="auto", help="auto (the GPU when there is one), cuda or cpu")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    t = c.add_argument_group("WD14 tagger")
    t.add_argument("--threshold", type=_fraction, help="general tags need at least this score (0.35)")
    t.add_argument("--character-threshold", type=_fraction, help="character tags need at least this score (0.85)")
    t.add_argument("--exclude-tags", metavar="TAGS", help="comma-separated tags never to write")
    t.add_argument("--replace-underscores", action=argparse.BooleanOptionalAction, default=True,
                   help="long_hair -> long hair (default on)")
    t.add_argument("--sort-by-confidence", action=argparse.BooleanOptionalAction, default=True,
                   help="most likely tags first (default on); off: in the tag list's order")
    t.add_argument("--rating-tags", action="store_true", help="add the rating (general, sensitive, ...)")
    t.add_argument("--max-tags", type=count(1), help="at most this many tags")
    b = c.add_argument_group("BLIP")
    how = b.add_mutually_exclusive_group()
    how.add_argument("--beams", type=count(1), help="beam search with N beams (default 3)")
    how.add_argument("--sampling", action="store_true", help="nucleus sampling instead of beam search")
    b.add_argument("--top-p", type=_fraction, help="nucleus sampling: keep the words making up this share (0.9)")
    b.add_argument("--min-length", type=count(0), help="at least this many tokens (5)")
    b.add_argument("--max-length", type=count(1), help="at most this many tokens (75)")
    c.set_defaults(handler=run_caption)


def _options(model, args):
    given = lambda names: [n for n in names if getattr(args, n) not in (None, False)]  # noqa: E731
    if model.kind == BLIP:
        from patina.core.caption.blip import BlipOptions

        wrong = given(_TAGGER_ONLY)
        if wrong:
            raise PatinaError(f"--{wrong[0].replace('_', '-')} is a WD14 tagger option; BLIP does not use it")
        o = BlipOptions(sampling=args.sampling)
        for name, attr in (("beams", "num_beams"), ("top_p", "top_p"), ("min_length", "min_length"),
                           ("max_length", "max_length"), ("batch_size", "batch_size")):
            if getattr(args, name) is not None:
                setattr(o, attr, getattr(args, name))
        o.check()
        return o
    from patina.core.caption.wd14 import TaggerOptions

    wrong = given(_BLIP_ONLY)
    if wrong:
        raise PatinaError(f"--{wrong[0].replace('_', '-')} is a BLIP option; the WD14 tagger does not use it")
    o = TaggerOptions(exclude=[t.strip() for t in (args.exclude_tags or "").split(",") if t.strip()],
                      replace_underscores=args.replace_underscores, sort_by_confidence=args.sort_by_confidence,
                      rating_tags=args.rating_tags)
    for name, attr in (("threshold", "general_threshold"), ("character_threshold", "character_threshold"),
                       ("max_tags", "max_tags"), ("batch_size", "batch_size")):
        if getattr(args, name) is not None:
            setattr(o, attr, getattr(args, name))
    o.check()
    return o


class _Bars:
    """tqdm bars on stderr: bytes while downloading, images while captioning."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def _bar(self, total: int, **kw):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, dynamic_ncols=True, file=sys.stderr, **kw)
        return self.bar

    def download(self, done: int, total: int) -> None:
        if not self.quiet:
            bar = self._bar(total, unit="B", unit_scale=True, desc="download")
            bar.total = total
            bar.n = done
            bar.refresh()

    def image(self, done: int, total: int, result) -> None:
        if not self.quiet:
            bar = self._bar(total, unit="img", desc="caption")
            bar.n = done
            bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_caption(args) -> int:
    from patina.core.caption.files import ModelMissing, model_files
    from patina.core.caption.run import ERROR, caption_pass, caption_targets, load_captioner
    from patina.core.cli.train import quiet_libraries

    model = get_model(args.model)
    options = _options(model, args)
    if not caption_targets(args.folder, args.caption_extension):
        raise PatinaError(f"{args.folder}: no images (PNG, JPEG, WebP or BMP) in it or in its N_name folders")
    bars = _Bars(args.quiet)
    quiet_libraries()
    try:
        folder = model_files(model, args.model_dir, download_missing=args.download, progress=bars.download)
    except ModelMissing as exc:
        if args.download:
            raise
        raise ModelMissing(f"{exc}; or run again with --download to fetch it now") from None
    finally:
        bars.close()
    if args.download or not args.quiet:
        print(f"Using {model.key} from {folder}", file=sys.stderr)
    captioner = load_captioner(model, folder, options, args.device)
    stop = []

    def on_sigint(_signum, _frame):
        if stop:
            raise KeyboardInterrupt
        print("\nStopping after this batch… (Ctrl+C again to stop at once)", file=sys.stderr)
        stop.append(True)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        report = caption_pass(args.folder, captioner, mode=args.mode, prefix=args.prefix, suffix=args.suffix,
                              caption_extension=args.caption_extension, preview=args.preview or 0,
                              on_result=bars.image, should_stop=lambda: bool(stop))
    finally:
        signal.signal(signal.SIGINT, old)
        bars.close()
    for r in report.results:
        if r.action == ERROR:
            print(f"warning: {r.image}: {r.message}", file=sys.stderr)
        elif args.preview:
            print(f"{r.image}: {r.new}")
    if args.preview:
        print(f"Preview of {len(report.results)} image(s); nothing was written.")
    else:
        print(report.summary() + ".")
    return 0
