"""Helpers shared by the advlab.data tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advlab.data.idx import write_idx

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def make_split(n: int, seed: int, hw: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_split_files(directory: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], *,
                      gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in arrays.items():
        img_name, lbl_name = FILES[split]
        if not gz:
            img_name, lbl_name = img_name[:-3], lbl_name[:-3]
        write_idx(directory / img_name, images)
        write_idx(directory / lbl_name, labels)
