"""What a dataset scan means for training: samples, steps, buckets, captions and everything the user
should fix, as data (for the GUI) and as aligned text (for the terminal)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from patina.core.dataset.buckets import BucketSet, Size, format_size, histogram, parse_resolution
from patina.core.dataset.captions import SOURCE_FILE, SOURCE_FOLDER, tag_frequency
from patina.core.dataset.folders import DatasetScan, ImageEntry, SkippedFile
from patina.core.dataset.plan import DatasetPlan
from patina.core.errors import PatinaError


@dataclass
class FolderSummary:
    name: str
    path: Path
    is_reg: bool
    images: int
    repeats: int
    samples: int  # images × repeats


@dataclass
class DatasetSummary:
    train_data_dir: Path
    reg_data_dir: Path | None
    folders: list[FolderSummary]
    train_images: int
    reg_images: int
    samples_per_epoch: int          # training samples (images × repeats)
    reg_samples_available: int
    reg_samples_used: int           # = samples_per_epoch when regularisation is used, else 0
    reg_factor: int                 # 2 with regularisation, else 1
    batch_size: int
    grad_accum: int
    steps_per_epoch: int
    epochs: int                     # epochs the run will have after the precedence rules
    total_steps: int
    steps_rule: str                 # which setting decided total_steps, in words
    resolution: Size
    enable_bucket: bool
    bucket_no_upscale: bool
    bucket_reso_steps: int
    min_bucket_reso: int
    buckets: dict[Size, int]        # training images per bucket
    reg_buckets: dict[Size, int]
    arithmetic: EpochArithmetic | None = None
    bucket_warnings: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    too_small: list[ImageEntry] = field(default_factory=list)
    captions_from_file: int = 0
    captions_from_folder: int = 0
    captions: str = ""              # captions_text(): where the captions come from, in words
    caption_warnings: list[str] = field(default_factory=list)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    folder_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total_samples_per_epoch(self) -> int:
        return self.samples_per_epoch + self.reg_samples_used

    @property
    def trainable(self) -> bool:
        return self.samples_per_epoch > 0


@dataclass(frozen=True)
class EpochArithmetic:
    """How one epoch's steps come about, the same in the plan dialog, ``patina dataset check`` and the
    folder wizard: training folders (images × repeats) give the training samples, regularisation adds as
    many samples again, and the batch size (and gradient accumulation) turn samples into steps."""

    folders: tuple[tuple[int, int], ...]   # (images, repeats) of each training folder
    train_samples: int
    reg_samples: int                       # regularisation samples used per epoch (0 without reg images)
    batch_size: int
    grad_accum: int
    steps_per_epoch: int

    @property
    def total_samples(self) -> int:
        return self.train_samples + self.reg_samples

    @property
    def simple_steps(self) -> int:
        """Steps if every batch were full: ``ceil(ceil(samples / batch) / accumulation)``."""
        return math.ceil(math.ceil(self.total_samples / self.batch_size) / self.grad_accum)

    @property
    def text(self) -> str:
        """e.g. ``16 images × 10 repeats = 160 train + 160 reg = 320 samples / batch 2 = 160 steps per epoch``."""
        parts = [f"{n:,} image{'s' if n != 1 else ''} × {r:,} repeat{'s' if r != 1 else ''}"
                 for n, r in self.folders if n and r] or ["0 images"]
        line = " + ".join(parts)
        if self.reg_samples:
            line += (f" = {self.train_samples:,} train + {self.reg_samples:,} reg = {self.total_samples:,} samples")
        else:
            line += f" = {self.train_samples:,} samples"
        line += f" / batch {self.batch_size}"
        if self.grad_accum > 1:
            line += f" / accumulation {self.grad_accum}"
        if self.steps_per_epoch == self.simple_steps:
            return line + f" = {self.steps_per_epoch:,} steps per epoch"
        # Every batch holds the images of one bucket, so a bucket's last batch may be short.
        return line + f" → {self.steps_per_epoch:,} steps per epoch (each batch holds one bucket's images)"


def epoch_arithmetic(folders, reg_samples_available: int = 0, batch_size: int = 1, grad_accum: int = 1,
                     steps: int | None = None) -> EpochArithmetic:
    """The arithmetic from counts: *folders* are the training folders' ``(images, repeats)``; regularisation
    samples are cycled to as many as training samples when any are available. *steps* is the real step
    count where it is known (bucketed batches), else the simple one."""
    folders = tuple((int(n), int(r)) for n, r in folders)
    train = sum(n * r for n, r in folders)
    reg = train if reg_samples_available > 0 and train > 0 else 0
    a = EpochArithmetic(folders, train, reg, max(1, int(batch_size)), max(1, int(grad_accum)), 0)
    return EpochArithmetic(a.folders, train, reg, a.batch_size, a.grad_accum,
                           a.simple_steps if steps is None else int(steps))


def captions_text(scan: DatasetScan) -> str:
    """Where the training images' captions come from, in one line (the run's plan, the dataset summary).

    An extension no caption file has (kohya_ss's ``.none-use-foldername`` habit) is a way to caption every
    image with its folder name (``10_sks dog`` → ``sks dog``); that is said plainly, not treated as an error."""
    ext, n, total = scan.caption_extension, scan.captioned, scan.train_images
    if total and not n:
        names = sorted({s.class_tokens for s in scan.train_subsets if s.images and s.class_tokens})
        shown = f" ({', '.join(repr(x) for x in names[:3])}{', …' if len(names) > 3 else ''})" if names else ""
        return f"no training image has a {ext} caption file, so folder names are used as captions{shown}"
    text = f"{n} of {total} training image(s) have a {ext} caption file"
    return text + ("; the others are captioned with their folder name" if n < total else "")


def scan_arithmetic(scan: DatasetScan, batch_size: int, grad_accum: int, steps: int) -> EpochArithmetic:
    """:func:`epoch_arithmetic` for a scanned dataset and the step count its bucketed batches give."""
    return epoch_arithmetic([(s.num_images, s.repeats) for s in scan.train_subsets], scan.reg_samples_available,
                            batch_size, grad_accum, steps)


def upscale_warning(images_and_buckets) -> str | None:
    """A warning for images smaller than their bucket on either side (training enlarges them), or None.
    *images_and_buckets*: ``(ImageEntry, (bucket_w, bucket_h))`` pairs."""
    small = [(img, b) for img, b in images_and_buckets if img.width < b[0] or img.height < b[1]]
    if not small:
        return None
    img, b = min(small, key=lambda ib: ib[0].width * ib[0].height)
    return (f"{len(small)} image(s) are smaller than their bucket and will be enlarged (e.g. {img.path.name}: "
            f"{img.width}×{img.height} → {b[0]}×{b[1]}); larger pictures give sharper results")


def _positive(value, label: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PatinaError(f"{label} must be a whole number; got {value!r}") from None
    if number < minimum:
        raise PatinaError(f"{label} must be at least {minimum}; got {number}")
    return number


def summarize(scan: DatasetScan, *, batch_size: int = 1, epochs: int = 1, grad_accum: int = 1,
              max_train_steps: int = 0, max_train_epochs: int = 0, resolution: Size | str = (512, 512),
              min_bucket_reso: int = 256, max_bucket_reso: int = 2048, bucket_reso_steps: int = 64,
              bucket_no_upscale: bool = True, enable_bucket: bool = True, top_n_tags: int = 20) -> DatasetSummary:
    """Everything about *scan* that matters for a training run with these settings."""
    batch_size = _positive(batch_size, "Batch size")
    grad_accum = _positive(grad_accum, "Gradient accumulation steps")
    epochs = _positive(epochs, "Epochs")
    max_train_steps = _positive(max_train_steps, "Max train steps", 0)
    max_train_epochs = _positive(max_train_epochs, "Max train epochs", 0)
    try:
        reso = parse_resolution(resolution)
        buckets = BucketSet(reso, min_bucket_reso, max_bucket_reso, bucket_reso_steps, bucket_no_upscale)
    except ValueError as exc:
        raise PatinaError(f"Bucket settings: {exc}") from None

    folders = [FolderSummary(s.name, s.path, s.is_reg, s.num_images, s.repeats, s.samples) for s in scan.subsets]

    def bucket_of(img: ImageEntry) -> Size:
        return buckets.assign(img.width, img.height) if enable_bucket else reso

    # The steps and the small-bucket rule come from the run plan the engine trains from.
    plan = DatasetPlan(scan, {"max_resolution": reso, "enable_bucket": enable_bucket,
                              "min_bucket_reso": min_bucket_reso, "max_bucket_reso": max_bucket_reso,
                              "bucket_reso_steps": bucket_reso_steps, "bucket_no_upscale": bucket_no_upscale,
                              "train_batch_size": batch_size, "flip_aug": False,
                              "gradient_accumulation_steps": grad_accum, "epoch": epochs,
                              "max_train_steps": max_train_steps, "max_train_epochs": max_train_epochs}, seed=0)
    length = plan.length()
    spe, total, n_epochs, rule = length.steps_per_epoch, length.total_steps, length.epochs, length.rule

    train_imgs = [img for s in scan.train_subsets if s.repeats > 0 for img in s.images]
    reg_imgs = [img for s in scan.reg_subsets if s.repeats > 0 for img in s.images]
    hist = histogram(bucket_of(i) for i in train_imgs)
    reg_hist = histogram(bucket_of(i) for i in reg_imgs)

    summary = DatasetSummary(
        train_data_dir=scan.train_data_dir, reg_data_dir=scan.reg_data_dir, folders=folders,
        train_images=scan.train_images, reg_images=scan.reg_images,
        samples_per_epoch=scan.samples_per_epoch, reg_samples_available=scan.reg_samples_available,
        reg_samples_used=scan.reg_samples_used, reg_factor=scan.reg_factor,
        batch_size=batch_size, grad_accum=grad_accum, steps_per_epoch=spe, epochs=n_epochs,
        total_steps=total, steps_rule=rule, resolution=reso, enable_bucket=bool(enable_bucket),
        bucket_no_upscale=bool(bucket_no_upscale), bucket_reso_steps=buckets.step,
        min_bucket_reso=buckets.min_size, buckets=hist, reg_buckets=reg_hist,
        skipped=list(scan.skipped), folder_problems=list(scan.folder_problems),
        arithmetic=scan_arithmetic(scan, batch_size, grad_accum, spe),
    )

    summary.bucket_warnings = plan.small_bucket_warnings()

    summary.too_small = [i for i in train_imgs + reg_imgs if buckets.too_small(i.width, i.height)]
    if summary.too_small:
        fate = "trained at their small size" if bucket_no_upscale or not enable_bucket else "enlarged"
        summary.warnings.append(f"{len(summary.too_small)} image(s) have a side under {buckets.min_size} px "
                                f"and will be {fate}; larger pictures give sharper results")
    upscaled = upscale_warning((i, bucket_of(i)) for i in train_imgs + reg_imgs)
    if upscaled:
        summary.warnings.append(upscaled)
    if not enable_bucket:
        off = [i for i in train_imgs if abs(math.log((i.width / i.height) / (reso[0] / reso[1]))) > 0.1]
        if off:
            summary.warnings.append(f"buckets are off: {len(off)} image(s) of another shape are cropped to "
                                    f"{format_size(reso)}")
    for img in train_imgs + reg_imgs:
        if img.ext_mismatch:
            summary.warnings.append(f"{img.path}: is really a {img.format} file (it works; renaming it to "
                                    f".{img.format.lower()} avoids trouble in other tools)")
    if scan.reg_subsets and scan.reg_samples_available == 0:
        summary.warnings.append("the regularisation folder has no usable images; training runs without it")
    elif scan.reg_samples_used and scan.reg_samples_available > scan.reg_samples_used:
        summary.warnings.append(f"only {scan.reg_samples_used} of {scan.reg_samples_available} regularisation "
                                "samples are used per epoch (as many as training samples)")

    summary.captions_from_file = sum(1 for i in train_imgs if i.caption_source == SOURCE_FILE)
    summary.captions_from_folder = sum(1 for i in train_imgs if i.caption_source == SOURCE_FOLDER)
    summary.captions = captions_text(scan)
    summary.caption_warnings = [i.caption_warning for i in train_imgs + reg_imgs if i.caption_warning]
    summary.top_tags = tag_frequency(i.caption for i in train_imgs).most_common(top_n_tags)
    return summary


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(r)]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def format_summary(summary: DatasetSummary) -> str:
    """The summary as plain text for a terminal, columns aligned."""
    s = summary
    lines = [f"Image folder:          {s.train_data_dir}"]
    if s.reg_data_dir is not None:
        lines.append(f"Regularisation folder: {s.reg_data_dir}")
    lines.append("")

    rows = [["Folder", "Images", "Repeats", "Samples/epoch"]]
    for f in s.folders:
        rows.append([("reg " if f.is_reg else "") + f.name, str(f.images), str(f.repeats), str(f.samples)])
    lines += _table(rows, right={1, 2, 3})
    lines.append("")

    lines.append(f"Training images:   {s.train_images}")
    if s.reg_images:
        lines.append(f"Reg images:        {s.reg_images}  ({s.reg_samples_available} sample(s) available, "
                     f"{s.reg_samples_used} used per epoch: as many as training samples)")
    lines.append(f"Samples per epoch: {s.total_samples_per_epoch}" + (
        f"  ({s.samples_per_epoch} train + {s.reg_samples_used} reg)" if s.reg_samples_used else ""))
    lines.append(f"Steps per epoch:   {s.steps_per_epoch}")
    if s.arithmetic is not None:
        lines.append(f"  {s.arithmetic.text}")
    lines.append(f"Total steps:       {s.total_steps}  ({s.steps_rule})")
    lines.append("")

    if s.enable_bucket:
        how = "no upscale" if s.bucket_no_upscale else "upscale allowed"
        lines.append(f"Buckets (max {format_size(s.resolution)}, step {s.bucket_reso_steps}, {how}):")
    else:
        lines.append(f"Buckets off: every image is cropped to {format_size(s.resolution)}")
    if s.buckets:
        top = max(s.buckets.values())
        rows = [[format_size(size), str(n), "#" * max(1, round(30 * n / top))] for size, n in s.buckets.items()]
        lines += _table(rows, right={0, 1})
    lines.append("")

    lines.append(f"Captions: {s.captions_from_file} from caption files, {s.captions_from_folder} from folder names")
    if s.captions and not s.captions_from_file:
        lines.append(f"  ({s.captions})")
    if s.top_tags:
        lines.append("Top tags: " + ", ".join(f"{tag} ({n})" for tag, n in s.top_tags))

    def block(title: str, items: list[str]) -> None:
        if items:
            lines.append("")
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"  - {item}" for item in items)

    block("Skipped files", [f"{f.path}: {f.reason}" for f in s.skipped])
    block("Folder problems", s.folder_problems)
    block("Caption warnings", s.caption_warnings)
    block("Warnings", s.bucket_warnings + s.warnings)
    return "\n".join(lines) + "\n"
