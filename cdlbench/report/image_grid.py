"""Sample grids: images in [-1, 1] [N, C, H, W] tiled into one PNG (for a look at samples).

    python -m cdlbench.report.image_grid RUN_DIR/samples/<cell>.npz grid.png [--scale 4]"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def tile(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] on a grey background."""
    n, c, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    px = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = px[i]
    return grid


def save_grid(images: np.ndarray, path: str | Path, scale: int = 4, columns: int | None = None) -> Path:
    """Write a PNG grid (nearest-neighbour upscaled by `scale`); needs Pillow."""
    from PIL import Image

    grid = tile(np.asarray(images, dtype=np.float32), columns)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid).save(path)
    return Path(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz")
    parser.add_argument("png")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--key", default="samples", help="array in the .npz (samples or data)")
    parser.add_argument("--columns", type=int, default=None,
                        help="images per row (class-conditional runs: the number of classes puts one class per column)")
    args = parser.parse_args(argv)
    from ..run.rundir import CorruptSamples, read_samples

    try:
        blob = read_samples(args.npz)
    except CorruptSamples as exc:          # truncated, bit rot, not a file: exit 2 naming it
        parser.exit(2, f"error: {exc}\n")
    save_grid(blob[args.key], args.png, args.scale, args.columns)
    print(args.png)


if __name__ == "__main__":
    main()
