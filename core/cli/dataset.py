"""``patina dataset check``, ``patina dataset prepare`` and ``patina dataset caption`` (:mod:`patina.core.cli.caption`)."""

from __future__ import annotations

import argparse

from patina.core.dataset.buckets import parse_resolution
from patina.core.models.families import FAMILIES


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "number"
    return parse


def _resolution(text: str) -> tuple[int, int]:
    try:
        return parse_resolution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="check, prepare or caption a training image folder",
                                   description="Check, prepare or caption a kohya-style training image folder.")
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")

    def show_help(_args) -> int:
        parser.print_help()
        return 0

    parser.set_defaults(handler=show_help)

    check = sub.add_parser(
        "check", help="scan an image folder and print what training would see",
        description="Scan an image folder (with N_name subfolders) and print images, repeats, steps, "
                    "buckets, captions and every problem found. Nothing is written.")
    check.add_argument("image_dir", metavar="IMAGE_DIR", help="the folder holding the N_name subfolders")
    check.add_argument("--reg", metavar="DIR", default=None, help="regularisation image folder")
    check.add_argument("--caption-extension", default=".txt", help="caption file extension (default .txt)")
    check.add_argument("--batch-size", type=_int_at_least(1), default=1)
    check.add_argument("--epochs", type=_int_at_least(1), default=1)
    check.add_argument("--grad-accum", type=_int_at_least(1), default=1, help="gradient accumulation steps")
    check.add_argument("--max-train-steps", type=_int_at_least(0), default=0, help="0 = from epochs")
    check.add_argument("--max-train-epochs", type=_int_at_least(0), default=0, help="0 = use --epochs")
    check.add_argument("--resolution", type=_resolution, default=(512, 512), help="W,H (default 512,512)")
    check.add_argument("--min-bucket-reso", type=_int_at_least(1), default=256)
    check.add_argument("--max-bucket-reso", type=_int_at_least(1), default=2048)
    check.add_argument("--bucket-reso-steps", type=_int_at_least(1), default=64)
    check.add_argument("--bucket-upscale", action="store_true", help="allow upscaling small images to a bucket")
    check.add_argument("--no-buckets", action="store_true", help="crop every image to the resolution")
    check.add_argument("--family", choices=FAMILIES, default=None,
                       help="also estimate the VRAM a run needs with Patina's default training settings for this "
                            "model family (`patina train CONFIG --dry-run` estimates a whole config)")
    check.set_defaults(handler=run_check)

    prep = sub.add_parser(
        "prepare", help="build <dest>/img/<N>_<instance> <class> (+ reg, log, model) from a plain image folder",
        description="Copy a folder of images (and their caption files) into the kohya layout. "
                    "The source folders are only read.")
    prep.add_argument("--instance", required=True, help="instance prompt, e.g. 'sks'")
    prep.add_argument("--class", dest="class_prompt", required=True, help="class prompt, e.g. 'dog'")
    prep.add_argument("--images", required=True, metavar="DIR", help="folder with the training images")
    prep.add_argument("--repeats", required=True, type=_int_at_least(1), help="repeats per epoch (kohya default 40)")
    prep.add_argument("--dest", required=True, metavar="DIR", help="destination training folder")
    prep.add_argument("--reg", metavar="DIR", default=None, help="folder with regularisation images")
    prep.add_argument("--reg-repeats", type=_int_at_least(0), default=1)
    prep.set_defaults(handler=run_prepare)

    from patina.core.cli.caption import add_caption_parser

    add_caption_parser(sub, _int_at_least)


def run_check(args) -> int:
    from patina.core.dataset.folders import scan_dataset
    from patina.core.dataset.summary import format_summary, summarize

    scan = scan_dataset(args.image_dir, args.reg, args.caption_extension, min_size=args.min_bucket_reso)
    summary = summarize(scan, batch_size=args.batch_size, epochs=args.epochs, grad_accum=args.grad_accum,
                        max_train_steps=args.max_train_steps, max_train_epochs=args.max_train_epochs,
                        resolution=args.resolution, min_bucket_reso=args.min_bucket_reso,
                        max_bucket_reso=args.max_bucket_reso, bucket_reso_steps=args.bucket_reso_steps,
                        bucket_no_upscale=not args.bucket_upscale, enable_bucket=not args.no_buckets)
    print(format_summary(summary), end="")
    if args.family:
        _print_vram(args, summary)
    return 0


def _print_vram(args, summary) -> None:
    """The VRAM estimate for the default training settings at this batch size and these buckets."""
    from patina.core.config.schema import check_values, defaults
    from patina.core.train import vram
    from patina.core.train.preflight import describe, probe_device

    cfg, _ = check_values(dict(defaults(), model_family=args.family, train_batch_size=args.batch_size,
                               gradient_accumulation_steps=args.grad_accum))
    est, problems = vram.for_config(cfg, args.family, summary.buckets or [args.resolution], probe_device())
    if est is None:
        return
    print("")
    print("\n".join(vram.format_lines(est, indent="")))
    print(f"  (default settings: rank {cfg['network_dim']}, {cfg['optimizer']}, {cfg['mixed_precision']}, "
          "no gradient checkpointing, latents cached)")
    for p in problems:
        print(f"  {describe(p)}")


def run_prepare(args) -> int:
    from patina.core.dataset.wizard import prepare_folders
    from patina.core.errors import PatinaError
    from patina.core.train.preflight import check_folder

    bad = check_folder(args.dest, "--dest", "destination folder")
    if bad:
        raise PatinaError(f"--dest: {bad[0].message}. Nothing was copied.")

    result = prepare_folders(args.instance, args.class_prompt, args.images, args.repeats, args.dest,
                             args.reg, args.reg_repeats)
    print(f"Copied {result.copied} training image(s) to {result.concept_dir}")
    if result.reg_concept_dir is not None:
        print(f"Copied {result.reg_copied} regularisation image(s) to {result.reg_concept_dir}")
    print(f"Copied {result.sidecars_copied} caption file(s)")
    for note in result.notes:
        print(f"Note: {note}")
    print("")
    print("Use these settings:")
    print(f"  Image folder:          {result.img_dir}")
    print(f"  Regularisation folder: {result.reg_dir if result.reg_dir is not None else '(none)'}")
    print(f"  Output folder:         {result.model_dir}")
    print(f"  Logging folder:        {result.log_dir}")
    return 0
