"""``patina lora merge-into | merge | resize | extract | grid``: the LoRA tools from the command line.

Progress goes to the terminal (stderr), Ctrl+C cancels and leaves no output, user mistakes end with one line.
LoRAs with a weight are written ``file.safetensors:0.8`` (weight 1 when left out).
"""

from __future__ import annotations

import sys
import time

from patina.core.models.families import FAMILIES


DYNAMIC = ("sv_ratio", "sv_fro", "sv_cumulative")


def register(sub) -> None:
    p = sub.add_parser("lora", help="LoRA tools: merge into a checkpoint, merge LoRAs, resize, extract, try them in a grid")
    lsub = p.add_subparsers(dest="lora_command", metavar="TOOL")
    p.set_defaults(handler=lambda a: (p.print_help(), 0)[1])

    mi = lsub.add_parser("merge-into", help="bake LoRAs (with weights) into a base checkpoint")
    mi.add_argument("base", help="base model: single-file .safetensors/.ckpt or a diffusers folder")
    mi.add_argument("loras", nargs="+", metavar="LORA[:WEIGHT]", help="LoRA files, each with an optional weight")
    mi.add_argument("-o", "--output", required=True,
                    help="output .safetensors (single-file base) or folder (diffusers base); never an input")
    mi.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"), help="output precision (fp16)")
    mi.add_argument("--family", choices=FAMILIES, help="model family when it cannot be detected")
    _common(mi, device=False)
    mi.set_defaults(handler=_merge_into)

    mg = lsub.add_parser("merge", help="merge several LoRAs (with weights) into one LoRA")
    mg.add_argument("loras", nargs="+", metavar="LORA[:WEIGHT]")
    mg.add_argument("-o", "--output", required=True, help="output .safetensors")
    mg.add_argument("--mode", default="concat", choices=("concat", "svd"),
                    help="concat: stack the ranks (exact); svd: re-factor to --rank")
    mg.add_argument("--rank", type=int, help="rank of the result (svd mode)")
    mg.add_argument("--conv-rank", type=int, help="rank of 3x3 conv modules (svd mode; default --rank)")
    _common(mg)
    mg.set_defaults(handler=_merge)

    rs = lsub.add_parser("resize", help="lower a LoRA's rank with SVD (fixed or dynamic)")
    rs.add_argument("lora", help="LoRA/LoCon .safetensors")
    rs.add_argument("-o", "--output", required=True, help="output .safetensors")
    rs.add_argument("--rank", type=int, required=True, help="new rank (the upper limit with --dynamic)")
    rs.add_argument("--conv-rank", type=int, help="new rank of 3x3 conv modules (default --rank)")
    rs.add_argument("--dynamic", choices=DYNAMIC, help="choose each module's rank from its singular values")
    rs.add_argument("--dynamic-param", type=float,
                    help="sv_ratio: largest/smallest kept singular value (e.g. 10); sv_fro / sv_cumulative: "
                         "share to keep (e.g. 0.9)")
    rs.add_argument("--verbose", action="store_true", help="print every module's rank and retained energy")
    _common(rs)
    rs.set_defaults(handler=_resize)

    ex = lsub.add_parser("extract", help="extract a LoRA from a fine-tuned model minus its base")
    ex.add_argument("--base", required=True, help="the original model (file or diffusers folder)")
    ex.add_argument("--tuned", required=True, help="the fine-tuned model (file or diffusers folder)")
    ex.add_argument("-o", "--output", required=True, help="output .safetensors")
    ex.add_argument("--rank", type=int, default=32, help="rank of linear / 1x1 modules (32)")
    ex.add_argument("--conv-rank", type=int, default=0, help="rank of 3x3 conv modules; 0 = no conv (LoRA, not LoCon)")
    ex.add_argument("--dynamic", choices=DYNAMIC, help="choose each module's rank from its singular values")
    ex.add_argument("--dynamic-param", type=float)
    ex.add_argument("--clamp-quantile", type=float, default=0.99, help="clamp factors to this quantile (0.99)")
    ex.add_argument("--min-diff", type=float, default=0.01,
                    help="a text encoder whose largest change is at most this is left out (0.01)")
    ex.add_argument("--family", choices=FAMILIES, help="model family when it cannot be detected")
    ex.add_argument("--verbose", action="store_true", help="print every module's rank and retained energy")
    _common(ex)
    ex.set_defaults(handler=_extract)

    from patina.core.cli.grid import add_grid_parser

    add_grid_parser(lsub)


def _common(parser, device: bool = True) -> None:
    if device:
        parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "float"),
                            help="precision of the saved LoRA (fp16)")
        parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def parse_weighted(items: list[str]) -> list[tuple[str, float]]:
    """``a.safetensors:0.8`` → (``a.safetensors``, 0.8); a path without a weight gets 1.0."""
    out = []
    for item in items:
        path, weight = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and head and "/" not in tail and "\\" not in tail:
            try:
                weight = float(tail)
                path = head
            except ValueError:
                pass
        out.append((path, weight))
    return out


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr
        self.last = 0.0
        self.width = 0

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        text = f"[{done}/{total}] {message}"[:100]
        sys.stderr.write("\r" + text.ljust(self.width))
        self.width = len(text)
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _run(fn, args, **kwargs) -> int:
    progress = _Progress(getattr(args, "quiet", False))
    try:
        report = fn(progress=progress, **kwargs)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        from patina.core.lora.toolkit import Cancelled

        raise Cancelled("Cancelled (Ctrl+C); no output was written.") from None
    print("\n".join(report.lines(per_module=getattr(args, "verbose", False))))
    return 0


def _merge_into(args) -> int:
    from patina.core.lora.merge_into import merge_into

    return _run(merge_into, args, base=args.base, loras=parse_weighted(args.loras), dst=args.output,
                dtype=args.dtype, family=args.family)


def _merge(args) -> int:
    from patina.core.lora.merge import merge

    return _run(merge, args, inputs=parse_weighted(args.loras), dst=args.output, mode=args.mode, rank=args.rank,
                conv_rank=args.conv_rank, precision=args.precision, device=args.device)


def _resize(args) -> int:
    from patina.core.lora.resize import resize

    return _run(resize, args, src=args.lora, dst=args.output, rank=args.rank, conv_rank=args.conv_rank,
                dynamic=args.dynamic, dynamic_param=args.dynamic_param, precision=args.precision,
                device=args.device)


def _extract(args) -> int:
    from patina.core.lora.extract import extract

    return _run(extract, args, base=args.base, tuned=args.tuned, dst=args.output, rank=args.rank,
                conv_rank=args.conv_rank, dynamic=args.dynamic, dynamic_param=args.dynamic_param,
                clamp_quantile=args.clamp_quantile, min_diff=args.min_diff, precision=args.precision,
                device=args.device, family=args.family)
