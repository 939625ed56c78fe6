#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): patina bench on full-size SD 1.5 / SDXL, 30 real training steps on
# random-weight full-size models (bf16 and fp16, AdamW8bit, SDPA and xformers), each LoRA verified, and the VRAM
# estimate beside every measured peak. Results: $OUT (or ./gpu-check)/results.md and results.json; exit 1 if any
# run failed.
#
# On a bare CUDA machine with only the repository and wheels:
#   python3 -m venv .venv && . .venv/bin/activate
#   pip install torch --index-url https://download.pytorch.org/whl/cu128   # or: pip install wheels/torch-*.whl
#   pip install -e '.[gpu]'                                               # bitsandbytes, xformers
#   scripts/gpu_check.sh                     # everything (about 20-30 min on an H100: two random models are made
#                                            # once, ~9 GB, in <out>-work next to the results folder)
#   scripts/gpu_check.sh --only sd1          # a part: runs whose name contains "sd1"
#   scripts/gpu_check.sh --dry-run           # list the runs
#   scripts/gpu_check.sh --tiny --device cpu # the same pipeline on the tests' tiny models, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
