"""Sliding-window inference with Gaussian weighting, streamed along z so memory stays bounded.

Replaces MONAI ``sliding_window_inference`` for prediction: MONAI stitches the whole ``(C, Z, Y, X)`` output in
float32 (5.87 GB peak on a 600x512x512 CT with 6 classes), whereas here only a slab of ``patch_z + step_z`` slices
is held while windows advance along z; finished slices are handed to ``sink`` (arg-max or copy) and dropped. Window
placement and weighting follow nnU-Net (Gaussian importance, sigma = patch / 8). ``benchmarks/predict.py`` compares
both. The module knows no model: a ``predictor`` maps ``(B, C_in, pz, py, px)`` to ``(B, C, pz, py, px)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]
#: sink(z_start, block): block is (C, n, Y, X) float32 of finished slices [z_start, z_start + n).
Sink = Callable[[int, torch.Tensor], None]

GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0
#: The Gaussian's floor, so that border voxels of a window never get zero weight.
MIN_WEIGHT = 1e-3


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets that tile ``[0, size)`` with windows of ``patch`` overlapping by ``overlap`` (0 <= overlap < 1).

    Examples
    --------
    >>> window_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    >>> window_starts(4, 4, 0.5)
    [0]
    """
    if size <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def gaussian_weight(patch: Sequence[int]) -> torch.Tensor:
    """``(pz, py, px)`` float32 importance map: a Gaussian centred on the window, max 1, floor ``MIN_WEIGHT``."""
    axes = []
    for n in patch:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        sigma = max(n * GAUSSIAN_SIGMA_FRACTION, 1e-6)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp_min(MIN_WEIGHT).float()


def sliding_window(
    image: torch.Tensor,
    predictor: Predictor,
    patch_size: Sequence[int],
    sink: Sink,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    pad_value: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    argmax_only: bool = False,
) -> None:
    """Run ``predictor`` over ``image`` window by window and stream Gaussian-averaged outputs to ``sink``.

    Parameters
    ----------
    image
        ``(C_in, Z, Y, X)`` input. Dimensions smaller than the patch are padded with ``pad_value`` (and the padding
        is cropped from what ``sink`` receives).
    predictor
        ``(B, C_in, pz, py, px) -> (B, C, pz, py, px)``.
    patch_size
        ``(pz, py, px)``.
    sink
        Receives each run of finished slices exactly once, in z order, covering ``[0, Z)``.
    overlap
        Fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
    batch_size
        Windows per predictor call.
    progress
        Called as ``progress(done_windows, total_windows)``.
    argmax_only
        Hand ``sink`` the weighted sums without dividing by the weights (same arg-max, one pass less).
    """
    _, z, y, x = image.shape
    pz, py, px = (int(v) for v in patch_size)
    pads = [max(0, p - n) for p, n in zip((pz, py, px), (z, y, x), strict=True)]
    if any(pads):
        image = F.pad(image, (0, pads[2], 0, pads[1], 0, pads[0]), value=pad_value)
    _, zp, yp, xp = image.shape
    zs, ys, xs = window_starts(zp, pz, overlap), window_starts(yp, py, overlap), window_starts(xp, px, overlap)
    total = len(zs) * len(ys) * len(xs)
    slab = _Slab((z, y, x), (yp, xp), gaussian_weight((pz, py, px)), sink, argmax_only=argmax_only)
    done = 0
    for z0 in zs:
        slab.flush(z0)
        windows = [(z0, y0, x0) for y0 in ys for x0 in xs]
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            batch = torch.stack([image[:, a : a + pz, b : b + py, c : c + px] for a, b, c in chunk])
            slab.add(chunk, predictor(batch).float())
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    slab.flush(zp)


class _Slab:
    """The running z-slab of weighted sums: windows are added, finished slices flushed to ``sink`` and dropped."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        padded_yx: tuple[int, int],
        weight: torch.Tensor,
        sink: Sink,
        *,
        argmax_only: bool,
    ) -> None:
        self.shape, self.padded_yx, self.weight, self.sink = shape, padded_yx, weight, sink
        self.argmax_only = argmax_only
        self.acc: torch.Tensor | None = None  # (C, n, Y, X) for slices [base, base + n)
        self.wsum = torch.zeros((0, *padded_yx))
        self.base = 0

    def _grow(self, channels: int, need: int) -> torch.Tensor:
        yp, xp = self.padded_yx
        acc = self.acc if self.acc is not None else torch.zeros((channels, 0, yp, xp))
        if acc.shape[1] < need:
            grow = need - acc.shape[1]
            acc = torch.cat([acc, torch.zeros((channels, grow, yp, xp))], dim=1)
            self.wsum = torch.cat([self.wsum, torch.zeros((grow, yp, xp))], dim=0)
        self.acc = acc
        return acc

    def add(self, starts: list[tuple[int, int, int]], out: torch.Tensor) -> None:
        """Accumulate ``out`` ``(B, C, pz, py, px)`` for the windows starting at ``starts``."""
        pz, py, px = self.weight.shape
        need = max(a for a, _, _ in starts) + pz - self.base
        acc, base = self._grow(out.shape[1], need), self.base
        for (a, b, c), o in zip(starts, out, strict=True):
            acc[:, a - base : a - base + pz, b : b + py, c : c + px].addcmul_(o, self.weight)  # no temporary
            if not self.argmax_only:  # an arg-max needs no normalisation, so no weight sum either
                self.wsum[a - base : a - base + pz, b : b + py, c : c + px] += self.weight

    def flush(self, until: int) -> None:
        """Hand slices ``[base, until)`` (cropped to the unpadded volume) to the sink and drop them."""
        if self.acc is None or until <= self.base:
            return
        z, y, x = self.shape
        n = min(until, z) - self.base
        if n > 0:
            block = self.acc[:, :n, :y, :x]
            # Dividing by the (positive) weight sum does not change an arg-max: skip it when only labels are wanted.
            self.sink(self.base, block if self.argmax_only else block / self.wsum[None, :n, :y, :x])
        self.acc, self.wsum = self.acc[:, until - self.base :], self.wsum[until - self.base :]
        self.base = until


def predict_labels(
    image: torch.Tensor, predictor: Predictor, patch_size: Sequence[int], **kwargs: object
) -> np.ndarray:
    """Arg-max label map ``(Z, Y, X)`` uint8 of a sliding-window prediction (see :func:`sliding_window`)."""
    z, y, x = image.shape[1:]
    labels = np.zeros((z, y, x), np.uint8)

    def sink(z0: int, block: torch.Tensor) -> None:
        # A running maximum over the few classes: much faster than argmax(0) over a strided slab.
        best = block[0].clone()
        index = torch.zeros(best.shape, dtype=torch.uint8)
        for c in range(1, block.shape[0]):
            better = block[c] > best
            best = torch.where(better, block[c], best)
            index.masked_fill_(better, c)
        labels[z0 : z0 + block.shape[1]] = index.numpy()

    sliding_window(image, predictor, patch_size, sink, argmax_only=True, **kwargs)  # type: ignore[arg-type]
    return labels


def predict_dense(
    image: torch.Tensor, predictor: Predictor, patch_size: Sequence[int], **kwargs: object
) -> torch.Tensor:
    """The stitched ``(C, Z, Y, X)`` float32 output (small volumes and tests; memory is C x the volume)."""
    out: list[torch.Tensor] = []
    sliding_window(image, predictor, patch_size, lambda z0, block: out.append(block.clone()), **kwargs)  # type: ignore[arg-type]
    return torch.cat(out, dim=1)


def mirror_tta(
    predictor: Predictor, axes: Sequence[Sequence[int]] = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
) -> Predictor:
    """Wrap ``predictor`` to average its softmax over mirrored inputs (test-time augmentation)."""

    def wrapped(batch: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for ax in axes:
            inp = torch.flip(batch, list(ax)) if ax else batch
            out = predictor(inp).float().softmax(1)
            out = torch.flip(out, list(ax)) if ax else out
            total = out if total is None else total + out
        assert total is not None
        return total / len(axes)

    return wrapped
