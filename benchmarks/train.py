"""Training throughput: ctseg's training loop vs a bare PyTorch loop on tensors already in memory, and bf16 vs fp32.

In one run, with the same network, batch and patch:

1. ``ctseg``: the real ``train()`` code path on a phantom dataset the script writes (memory-mapped cache, patch
   sampling with augmentation in a DataLoader worker, AMP step, checkpoints); the step rate is taken from the
   ``train_seconds`` that every epoch records (steps only: validation and checkpoint writing excluded), epochs after
   the first (warm-up).
2. ``bare``: a plain loop ``loss = loss_fn(model(x), y); backward; clip; step`` over random tensors already in
   memory, same autocast.
Goal: ctseg / bare >= 0.9 (the data pipeline never starves the model). Then the bare loop in fp32 vs bf16.

Usage: ``python benchmarks/train.py [--steps 30] [--patch 64] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ctseg.config import ModelConfig
from ctseg.device import amp_dtype
from ctseg.model import build_loss, build_model
from ctseg.phantom import write_phantom_dataset
from ctseg.train.runner import TrainOptions, train

CHANNELS = (16, 32, 64, 128)


def bare_rate(patch: int, batch: int, steps: int, amp: bool, classes: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=CHANNELS), 1, classes)
    loss_fn = build_loss("dice_ce")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, patch, patch, patch)
    y = torch.randint(0, classes, (batch, 1, patch, patch, patch))
    dtype = amp_dtype(torch.device("cpu")) if amp else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def ctseg_rate(work: Path, patch: int, batch: int, steps: int) -> tuple[float, int]:
    ds = write_phantom_dataset(work / "ds", 3, shape=(96, 128, 128), spacing_mm=(2.0, 1.5, 1.5))
    overrides = {
        "train": {
            "epochs": 4,
            "steps_per_epoch": steps,
            "val_every": 100,
            "patch_size": [patch] * 3,
            "batch_size": batch,
            "num_workers": 1,
        },
        "model": {"channels": list(CHANNELS), "strides": [[2, 2, 2]] * 3},
    }
    run = work / "run"
    train(TrainOptions(dataset=ds, run_dir=run, model_dir=work / "model", overrides=overrides, progress=False))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    warm = rows[1:]
    return sum(r["step"] - p["step"] for p, r in zip(rows, warm, strict=False)) / sum(
        r["train_seconds"] for r in warm
    ), 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per measured epoch / bare loop")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ctseg-bench-train-"))
    rate, classes = ctseg_rate(work, args.patch, args.batch, args.steps)
    bare = bare_rate(args.patch, args.batch, args.steps, True, classes)
    fp32 = bare_rate(args.patch, args.batch, args.steps, False, classes)
    print(f"patch {args.patch}^3, batch {args.batch}, U-Net {CHANNELS}, {torch.get_num_threads()} threads")
    print(f"  ctseg train loop (bf16)  {rate:6.2f} steps/s")
    print(
        f"  bare PyTorch loop (bf16) {bare:6.2f} steps/s   ctseg / bare = {rate / bare:.2f}"
        f"  {'PASS' if rate / bare >= 0.9 else 'FAIL'} (goal >= 0.9)"
    )
    print(f"  bare PyTorch loop (fp32) {fp32:6.2f} steps/s   bf16 speed-up {bare / fp32:.2f}x")


if __name__ == "__main__":
    main()
