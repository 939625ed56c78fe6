"""``patina lora grid``: try LoRA files on a base model and save an image grid (rows = LoRA files, columns =
LoRA weights or prompts) with its settings in the PNG's text."""

from __future__ import annotations

from pathlib import Path


def add_grid_parser(lora_subparsers) -> None:
    """Add ``grid`` to the ``patina lora`` subcommands."""
    from patina.core.config.schema import SAMPLERS

    g = lora_subparsers.add_parser(
        "grid", help="render a grid: rows = LoRA files, columns = LoRA weights or prompts",
        description="Render an image grid on a base model with each LoRA applied at run time (no merge). "
                    "Weight 0 is the base model itself.")
    g.add_argument("--model", required=True, help="base model: single-file .safetensors/.ckpt or a diffusers folder")
    g.add_argument("--lora", action="append", default=[], metavar="FILE",
                   help="a LoRA .safetensors (repeat for more rows)")
    g.add_argument("--run", nargs=2, metavar=("OUTPUT_DIR", "OUTPUT_NAME"),
                   help="add every LoRA file a run saved: <OUTPUT_DIR>/<OUTPUT_NAME>-000001.safetensors …")
    g.add_argument("--prompt", action="append", default=[],
                   help='a prompt in kohya sample syntax, e.g. "sks dog --n blurry --s 20" (repeat for more)')
    g.add_argument("--prompts-file", help="a text file with one prompt per line (kohya sample syntax)")
    g.add_argument("--weights", default="0,0.4,0.6,0.8,1.0", help="LoRA weights, comma-separated (0,0.4,0.6,0.8,1.0)")
    g.add_argument("--seeds", default="1", help="seeds, comma-separated (1)")
    g.add_argument("--axis", default="weights", choices=("weights", "prompts"),
                   help="what the columns show side by side (weights)")
    g.add_argument("--sampler", default="euler_a", choices=SAMPLERS, help="sampler (euler_a)")
    g.add_argument("--steps", type=int, default=20, help="sampling steps (20)")
    g.add_argument("--cfg", type=float, default=7.0, help="guidance scale (7)")
    g.add_argument("--width", type=int, help="image width (the model's native size)")
    g.add_argument("--height", type=int, help="image height (the model's native size)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu")
    g.add_argument("-o", "--output", required=True, help="the grid .png")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    g.set_defaults(handler=_grid)


def _grid(args) -> int:
    from patina.core.cli.lora import _Progress
    from patina.core.errors import PatinaError
    from patina.core.lora.grid import render_lora_grid, run_outputs, save_grid
    from patina.core.lora.toolkit import Cancelled

    out = Path(args.output).expanduser()
    if out.suffix.lower() != ".png":
        raise PatinaError(f"-o {args.output}: the grid is saved as a .png image.")
    loras = list(args.lora)
    if args.run:
        found = run_outputs(*args.run)
        if not found:
            raise PatinaError(f"--run: no {args.run[1]}*.safetensors LoRA file in {args.run[0]}.")
        loras += [str(p) for p in found]
    prompts = list(args.prompt)
    if args.prompts_file:
        try:
            prompts += Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PatinaError(f"--prompts-file {args.prompts_file}: cannot be read ({exc}).") from None
    size = None
    if args.width or args.height:
        size = (args.width or args.height, args.height or args.width)
    try:
        result = render_lora_grid(args.model, loras, prompts, args.seeds, args.weights, axis=args.axis,
                                  sampler=args.sampler, steps=args.steps, cfg=args.cfg, size=size,
                                  device=args.device, progress=_Progress(args.quiet))
    except KeyboardInterrupt:
        raise Cancelled("Cancelled (Ctrl+C); no grid was written.") from None
    path = save_grid(result, out)
    rows, cols = result.shape
    print(f"{path}: {rows} row(s) × {cols} column(s) ({result.image.width}×{result.image.height} px)")
    return 0
