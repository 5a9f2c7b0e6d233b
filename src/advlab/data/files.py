"""Datasets a user brings: NumPy ``.npz`` archives (images, tables, signals) and folders of images."""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .dataset import Dataset, FeatureScaling
from .errors import DatasetNotFoundError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder", "load_npz"]

logger = logging.getLogger(__name__)

#: File suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_KEY_PAIRS = (("x", "y"), ("images", "labels"))
#: what an archive's ``x`` may hold (see :func:`load_npz`)
LAYOUTS = ("image", "table", "signal")
_PROGRESS_MIN_IMAGES = 2000  # show a progress bar for folders at least this large


def _images_to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} -> (N, C, H, W)."""
    if images.ndim == 3:
        return images[:, None, :, :]
    if images.ndim == 4:
        if images.shape[1] in (1, 3):  # channels first wins when both readings are possible
            return images
        if images.shape[3] in (1, 3):
            return images.transpose(0, 3, 1, 2)
        raise ValueError(
            f"{where}: cannot tell the channel axis of images shaped {images.shape}; "
            "expected (N, C, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    raise ValueError(
        f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {images.shape}"
    )


def _images_to_float(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> /255; float must already be finite and in [0, 1]."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        out = images.astype(np.float32)
        if out.size:
            if not np.isfinite(out).all():
                raise ValueError(f"{where}: images contain NaN or infinite values")
            lo, hi = float(out.min()), float(out.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{where}: float images must lie in [0, 1], found [{lo:g}, {hi:g}]; rescale "
                    "them before saving (e.g. x / 255 for 8-bit data, or (x - x.min()) / (x.max() - x.min()))"
                )
        return out
    raise ValueError(
        f"{where}: images must be uint8 (0..255) or float in [0, 1], got {images.dtype}; "
        "convert with x.astype(np.uint8) or x.astype(np.float32) / 255"
    )


def _scale_columns(values: np.ndarray, fit_on: np.ndarray, where: str, fit_key: str) -> tuple[np.ndarray, FeatureScaling]:
    """Min-max scale ``values`` (N, F, *) per index of axis 1 with the ranges of ``fit_on``."""
    for array, key in ((values, where), (fit_on, fit_key)):
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{key}: scale=True needs numeric values, got {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"{key}: contains NaN or infinite values; impute or drop them first")
    if fit_on.shape[1:] != values.shape[1:]:
        raise ValueError(f"{where}: shape {values.shape} does not match {fit_key!r} {fit_on.shape}, whose ranges "
                         "scale it")
    scaling = FeatureScaling.fit(torch.from_numpy(fit_on.astype(np.float64)),
                                 fitted_on=f"{fit_key} ({fit_on.shape[0]} rows)")
    return scaling.to_unit(torch.from_numpy(values.astype(np.float64))).numpy(), scaling


def _default_class_names(labels: np.ndarray) -> tuple[str, ...]:
    n = int(labels.max()) + 1 if labels.size else 1
    return tuple(str(k) for k in range(n))


#: how many bytes one byte of a member can expand to: deflate at most 1032-fold (258 from 2 bits)
_MAX_EXPANSION = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}


def _check_npy_size(path: Path, archive: Any, key: str) -> None:
    """Refuse a member whose header claims more data than the archive holds for it, before
    NumPy allocates what the header claims (a few bytes can claim terabytes). The member's size in
    the zip directory is a claim too: no more is believed than its compressed bytes can expand to."""
    name = f"{key}.npy"
    try:
        info = archive.zip.getinfo(name)
        if info.compress_type not in _MAX_EXPANSION:
            raise ValueError(f"compression method {info.compress_type} is neither stored nor deflated, "
                             "what np.savez and np.savez_compressed write")
        with archive.zip.open(name) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (KeyError, OSError, EOFError, ValueError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
            zlib.error) as exc:  # (NumPy parses the header as a Python literal, with tokenize for old files)
        raise ValueError(f"{path}[{key!r}]: not a readable .npy member ({exc})") from exc
    if dtype.hasobject:
        raise ValueError(
            f"{path}[{key!r}]: the array is stored as Python objects, which needs pickle; save images "
            "and labels as numeric arrays and class_names as np.array([...], dtype=str)")
    claimed = math.prod(shape) * dtype.itemsize
    compressed = min(info.compress_size, path.stat().st_size)
    holds = min(info.file_size, compressed * _MAX_EXPANSION[info.compress_type])
    if claimed > holds:
        raise ValueError(f"{path}[{key!r}]: its header claims shape {shape} ({claimed:,} bytes) but the "
                         f"archive holds {holds:,} bytes for it; the file is corrupt or hostile")


def load_npz(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    name: str | None = None,
    class_names: Sequence[str] | None = None,
    layout: str | None = None,
    scale: bool = False,
) -> Dataset:
    """Load a dataset from a NumPy ``.npz`` archive: images, a table or signals.

    Keys, first match wins: ``x_<split>``/``y_<split>`` (the Keras layout, e.g.
    ``mnist.npz``) when ``split`` is given; ``x``/``y``; ``images``/``labels``. An optional
    ``class_names`` key holds a 1-D string array. Pickled objects are never loaded; members must be
    stored or deflated (as ``np.savez`` and ``np.savez_compressed`` write them).

    What ``x`` holds (its *layout*) is ``layout=``, else the archive's ``layout`` key (a string),
    else read from its rank: ``(N, D)`` is a table, ``(N, H, W)`` and 4-D arrays are images. Signals
    ``(N, C, T)`` share their rank with grayscale images, so say ``layout="signal"`` for them.

    - ``"image"``: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in {1, 3}.
    - ``"table"``: ``(N, D)``; ``"signal"``: ``(N, C, T)``. An optional ``feature_names`` key
      (1-D strings) names axis 1 (the features, or the channels).

    ``uint8`` is divided by 255, floats must already lie in ``[0, 1]``, unless ``scale=True``
    (tables and signals): then any numeric values are min-max scaled per feature (per channel),
    fitted on ``x_train`` when the archive has it, else on the ``x`` loaded, and the ranges are kept
    in :attr:`Dataset.scaling`. Labels must be integers in ``[0, num_classes)``.

    Args:
        path: the ``.npz`` file.
        split: ``"train"`` or ``"test"`` to pick ``x_<split>``/``y_<split>``; ignored for
            archives holding a single ``x``/``y`` pair.
        name: dataset name; defaults to the file's stem.
        class_names: overrides the archive's ``class_names``; by default ``"0"``, ``"1"``, ...
            up to the largest label.
        layout: ``"image"``, ``"table"`` or ``"signal"``; see above.
        scale: min-max scale a table or signals to ``[0, 1]`` (see above).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"npz file not found: {path}")
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    with archive:
        keys = set(archive.files)
        pairs = list(_KEY_PAIRS)
        if split is not None:
            pairs.insert(0, (f"x_{split}", f"y_{split}"))
        found = next(((kx, ky) for kx, ky in pairs if kx in keys and ky in keys), None)
        if found is None:
            splits = sorted(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
            hint = f"; it holds splits {splits}, pass split=" if splits and split is None else ""
            raise ValueError(
                f"{path}: expected arrays 'x' and 'y' (or 'images' and 'labels'"
                f"{', or x_' + split + ' and y_' + split if split else ''}), found {sorted(keys)}{hint}"
            )
        key_x, key_y = found
        fit_key = "x_train" if scale and "x_train" in keys else key_x
        for key in dict.fromkeys((key_x, key_y, "class_names", "layout", "feature_names", fit_key)):
            if key in keys:
                _check_npy_size(path, archive, key)
        try:
            images = archive[key_x]
            labels = archive[key_y]
            stored_names = archive["class_names"] if "class_names" in keys else None
            stored_layout = archive["layout"] if "layout" in keys else None
            stored_features = archive["feature_names"] if "feature_names" in keys else None
            fit_on = archive[fit_key] if scale else None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            # (object arrays, which would need pickle, were refused above)
            raise ValueError(f"{path}: a member of the archive is truncated or corrupt ({exc})") from exc

    where = f"{path}[{key_x!r}]"
    if layout is None and stored_layout is not None:
        if stored_layout.ndim != 0 or stored_layout.dtype.kind not in "US" or str(stored_layout) not in LAYOUTS:
            raise ValueError(f"{path}['layout']: expected one string of {', '.join(LAYOUTS)}, got {stored_layout!r}")
        layout = str(stored_layout)
    if layout is None:
        layout = "table" if images.ndim == 2 else "image"
    scaling = None
    if layout == "image":
        if scale:
            raise ValueError(f"{where}: scale=True is for tables and signals; images must be uint8 or in [0, 1]")
        images = _images_to_float(_images_to_nchw(images, where), where)
    else:
        rank = 2 if layout == "table" else 3
        shape_text = "(N, D)" if layout == "table" else "(N, C, T)"
        if images.ndim != rank:
            raise ValueError(f"{where}: a {layout} must be {shape_text}, got shape {images.shape}")
        if scale:
            images, scaling = _scale_columns(images, fit_on, where, fit_key)
        else:
            try:
                images = _images_to_float(images, where)
            except ValueError as exc:
                raise ValueError(f"{exc}; or pass scale=True to min-max scale each "
                                 f"{'feature' if layout == 'table' else 'channel'}") from None
    if labels.ndim != 1:
        raise ValueError(f"{path}[{key_y!r}]: labels must have shape (N,), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}[{key_y!r}]: labels must be integers, got {labels.dtype}; "
            "convert class indices with y.astype(np.int64)"
        )
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"{path}[{key_y!r}]: labels must be >= 0, found {int(labels.min())}")

    if class_names is None and stored_names is not None:
        if stored_names.ndim != 1 or stored_names.dtype.kind not in "US":
            raise ValueError(
                f"{path}['class_names']: expected a 1-D string array, got {stored_names.dtype} "
                f"{stored_names.shape}"
            )
        class_names = [str(c.decode() if isinstance(c, bytes) else c) for c in stored_names]
    if class_names is None:
        class_names = _default_class_names(labels)
    feature_names = None
    if stored_features is not None and layout != "image":
        if stored_features.ndim != 1 or stored_features.dtype.kind not in "US":
            raise ValueError(f"{path}['feature_names']: expected a 1-D string array, got {stored_features.dtype} "
                             f"{stored_features.shape}")
        feature_names = tuple(str(f) for f in stored_features)

    try:
        return Dataset(
            name=name or path.stem,
            x=torch.from_numpy(np.ascontiguousarray(images)),
            y=torch.from_numpy(labels.astype(np.int64)),
            class_names=tuple(class_names),
            source=f"npz:{path.resolve()} (keys {key_x}, {key_y}; {layout}"
                   f"{f', min-max scaled on {fit_key}' if scaling is not None else ''})",
            feature_names=feature_names,
            scaling=scaling,
        )
    except ValueError as exc:  # e.g. 0 images beside 10 labels: say which file
        raise ValueError(f"{path}: {exc}") from None


#: the most pixels one image may claim (8192 x 8192 is 67M): a 100-byte PNG can claim 20000 x 20000
MAX_PIXELS = 8192 * 8192
#: the most pixels a file may claim per byte it has: a 1-bit PNG (8 pixels a byte) deflated 1032-fold,
#: the most deflate can expand; JPEG and BMP images hold far fewer
_MAX_PIXELS_PER_BYTE = 8 * 1032


#: what PIL raises for a broken chunk met while decoding: the exceptions its own ``Image.open``
#: turns into "cannot identify image file" (it calls them "end of data"), and SyntaxError
_PIL_END_OF_DATA = (SyntaxError, IndexError, TypeError, KeyError, EOFError, struct.error)


def _list_images(class_dir: Path) -> list[Path]:
    return sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    grayscale: bool | None = None,
    size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load ``path/<class_name>/<image>`` files as a dataset.

    Classes are the sub-directories, sorted by name (label ``k`` is the ``k``-th); images
    are the ``.png``, ``.jpg``, ``.jpeg`` and ``.bmp`` files directly inside each, sorted
    by name. Hidden files and directories are skipped.

    Args:
        path: the root folder.
        grayscale: one channel (``True``) or RGB (``False``); by default grayscale when
            every image is 8-bit grayscale (PIL mode ``"L"``) or 1-bit, else RGB.
        size: ``(height, width)`` to resize every image to (bilinear). Without it all
            images must already share one size.
        name: dataset name; defaults to the folder's name.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory; expected a folder with one sub-folder per class")
    if size is not None:
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"size must be (height, width) with positive ints, got {size!r}")
        size = (int(size[0]), int(size[1]))

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{root}: no class folders found; expected {root}/<class_name>/<image>.png (one sub-folder per class)"
        )
    files_per_class = [(d, _list_images(d)) for d in class_dirs]
    empty = [d.name for d, files in files_per_class if not files]
    if empty:
        raise ValueError(
            f"{root}: class folder(s) {empty} hold no images with suffix {', '.join(IMAGE_SUFFIXES)}; "
            "remove them or add images"
        )

    # First pass reads headers only (PIL decodes pixels lazily): modes, sizes, labels.
    entries: list[tuple[Path, int, str, tuple[int, int]]] = []  # (file, label, mode, (W, H))
    for label, (_, files) in enumerate(files_per_class):
        for file in files:
            try:
                with Image.open(file) as img:
                    entries.append((file, label, img.mode, img.size))
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                raise ValueError(f"{file}: cannot read image ({exc})") from exc
            w, h = entries[-1][3]
            if w * h > MAX_PIXELS:  # judged from the header, before any pixel is decoded
                raise ValueError(f"{file}: its header claims {h}x{w} pixels, more than the "
                                 f"{MAX_PIXELS:,} an image of a classification data set may have")
            nbytes = file.stat().st_size
            if w * h > _MAX_PIXELS_PER_BYTE * nbytes:  # PIL would allocate them all before decoding
                raise ValueError(f"{file}: its header claims {h}x{w} pixels, more than its {nbytes:,} "
                                 "bytes can encode; the file is truncated or hostile")

    if grayscale is None:
        grayscale = all(mode in ("L", "1") for _, _, mode, _ in entries)
    mode = "L" if grayscale else "RGB"

    if size is None:
        first_file, _, _, first_size = entries[0]
        for file, _, _, img_size in entries:
            if img_size != first_size:
                raise ValueError(
                    f"{root}: images differ in size: {first_file.relative_to(root)} is "
                    f"{first_size[1]}x{first_size[0]} (HxW) but {file.relative_to(root)} is "
                    f"{img_size[1]}x{img_size[0]}; pass size=(height, width) to resize them all"
                )

    arrays = []
    for file, _, _, img_size in tqdm(entries, desc=f"reading {root.name}", unit="img", leave=False,
                                     disable=len(entries) < _PROGRESS_MIN_IMAGES):
        try:
            # decoded from memory: PIL reads a chunk with one read() of the length the chunk claims,
            # which on a file allocates that much first (a 150-byte PNG can claim a 4 GB chunk)
            with Image.open(io.BytesIO(file.read_bytes())) as img:
                converted = img.convert(mode)
        except (OSError, ValueError, Image.DecompressionBombError, *_PIL_END_OF_DATA) as exc:
            raise ValueError(f"{file}: cannot decode image ({exc})") from exc
        if size is not None and img_size != (size[1], size[0]):
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL: (W, H)
        arrays.append(np.asarray(converted, dtype=np.uint8))
    labels = [label for _, label, _, _ in entries]
    resized = f", resized to {size[0]}x{size[1]}" if size is not None else ""
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    if stacked.ndim == 3:
        stacked = stacked[:, None]
    else:
        stacked = stacked.transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(stacked)).to(torch.float32).div_(255.0)  # (N, C, H, W)
    logger.info("Loaded %d images in %d classes from %s", len(labels), len(class_dirs), root)
    return Dataset(
        name=name or root.name,
        x=x,
        y=torch.tensor(labels, dtype=torch.int64),
        class_names=tuple(d.name for d in class_dirs),
        source=f"folder:{root.resolve()} ({mode}{resized})",
    )
