"""Sensor signals ``(N, C, T)``: the time-series classification sets that sktime (or aeon) ship.

The UEA/UCR archive's small sets travel inside the ``sktime`` and ``aeon`` wheels as ``.ts`` files
(``<package>/datasets/data/<Name>/<Name>_TRAIN.ts``). advlab reads those files with its own parser
(:func:`read_ts`): the package must be installed (``pip install advlab[signals]``) but is never
imported, and nothing is downloaded.

Each channel is min-max scaled to ``[0, 1]`` with its range over every time step of the TRAIN file
(test values outside it are clipped); the ranges are kept in :attr:`Dataset.scaling` to plot or
report the curves in their original units.

Example:
    >>> ds = load_signal("basic-motions", split="train")          # doctest: +SKIP
    >>> ds.input_shape, ds.class_names                            # doctest: +SKIP
    ((6, 100), ('Standing', 'Running', 'Walking', 'Badminton'))
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, FeatureScaling
from .errors import DatasetNotFoundError

__all__ = ["SIGNALS", "SignalSpec", "TsFormatError", "load_signal", "read_ts"]

logger = logging.getLogger(__name__)

#: the packages whose wheels hold the .ts files, in the order they are searched
PACKAGES = ("sktime", "aeon")
EXTRA_HINT = "pip install 'advlab[signals]' (or pip install sktime)"
#: refuse a .ts file larger than this (the bundled ones are under 2 MB)
MAX_TS_BYTES = 64 * 1024 * 1024


class TsFormatError(ValueError):
    """A ``.ts`` file that does not follow the sktime/UEA format (the message names the line)."""


@dataclass(frozen=True)
class SignalSpec:
    """A signal set bundled with sktime/aeon: its archive name and what its channels are."""

    archive_name: str
    channel_names: tuple[str, ...] | None = None
    description: str = ""


SIGNALS: dict[str, SignalSpec] = {
    "basic-motions": SignalSpec(
        "BasicMotions",
        ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"),
        "smart-watch accelerometer and gyroscope, 10 Hz for 10 s; standing, running, walking, badminton",
    ),
    "gunpoint": SignalSpec("GunPoint", ("hand_x",), "x position of an actor's hand: drawing a gun or pointing"),
    "italy-power-demand": SignalSpec("ItalyPowerDemand", ("demand",), "24 hourly electricity demands a day"),
}
"""Built-in signal sets: advlab name -> :class:`SignalSpec`."""


def read_ts(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Parse a ``.ts`` file of equal-length series with class labels (sktime's format).

    The format: ``#`` comment lines, ``@key value`` header lines (``@classLabel true A B ...``),
    ``@data``, then one case per line: the channels separated by ``:``, each a comma-separated
    list of values, the class label last.

    Returns:
        ``(values, labels, header)``: ``float64`` ``(N, C, T)``, one label string per case, and
        the header lines as ``{key: value}`` (keys lower-cased).

    Raises:
        TsFormatError: no ``@data``, time stamps, missing values (``?``), series of unequal
            length, a case without a label or with the wrong number of channels.
    """
    path = Path(path)
    if path.stat().st_size > MAX_TS_BYTES:
        raise TsFormatError(f"{path}: {path.stat().st_size:,} bytes, more than the {MAX_TS_BYTES:,} a .ts file "
                            "may have here")
    header: dict[str, str] = {}
    cases: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8", errors="strict") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise TsFormatError(f"{path}, line {number}: expected '@key value' or '@data' before the data")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    _check_header(path, header)
                else:
                    header[key] = value.strip()
                continue
            cases.append(_parse_case(path, number, line, labels))
    if not in_data:
        raise TsFormatError(f"{path}: no '@data' line; is this a sktime/UEA .ts file?")
    if not cases:
        raise TsFormatError(f"{path}: '@data' is followed by no cases")
    shapes = {c.shape for c in cases}
    if len(shapes) > 1:
        raise TsFormatError(f"{path}: the cases differ in shape (channels, steps): {sorted(shapes)[:4]}; "
                            "only equal-length series are supported (pad or resample them first)")
    return np.stack(cases), labels, header


def _check_header(path: Path, header: dict[str, str]) -> None:
    if header.get("timestamps", "false").lower() == "true":
        raise TsFormatError(f"{path}: series with time stamps are not supported")
    if header.get("classlabel", "true").split()[:1] == ["false"]:
        raise TsFormatError(f"{path}: '@classLabel false': the cases have no class labels to classify")


def _parse_case(path: Path, number: int, line: str, labels: list[str]) -> np.ndarray:
    *channels, label = line.split(":")
    if not channels:
        raise TsFormatError(f"{path}, line {number}: a case needs values and a class label separated by ':'")
    if "?" in line:
        raise TsFormatError(f"{path}, line {number}: missing values ('?') are not supported; impute them first")
    try:
        rows = [np.array(channel.split(","), dtype=np.float64) for channel in channels]
    except ValueError as exc:
        raise TsFormatError(f"{path}, line {number}: not a list of numbers ({exc})") from None
    lengths = {r.size for r in rows}
    if len(lengths) > 1:
        raise TsFormatError(f"{path}, line {number}: its channels have different lengths {sorted(lengths)}")
    if not all(np.isfinite(r).all() for r in rows):
        raise TsFormatError(f"{path}, line {number}: non-finite values")
    labels.append(label.strip())
    return np.stack(rows)  # (C, T)


def _bundled_file(spec: SignalSpec, split: str) -> Path:
    """The ``.ts`` file of ``spec`` inside the first installed package of :data:`PACKAGES`."""
    searched = []
    for package in PACKAGES:
        try:
            found = importlib.util.find_spec(package)  # finds the package without importing it
        except (ImportError, ValueError):
            found = None
        if found is None or found.origin is None:
            searched.append(f"{package} (not installed)")
            continue
        file = Path(found.origin).parent / "datasets" / "data" / spec.archive_name / (
            f"{spec.archive_name}_{split.upper()}.ts")
        if file.is_file():
            return file
        searched.append(str(file))
    raise DatasetNotFoundError(
        f"the {spec.archive_name} signals ship inside the sktime (or aeon) package, which advlab reads "
        f"without downloading anything; install it with {EXTRA_HINT}. Looked in: {'; '.join(searched)}"
    )


def load_signal(name: str, *, split: str = "test") -> Dataset:
    """A bundled signal set as a :class:`Dataset` ``(N, C, T)`` in ``[0, 1]``.

    Args:
        name: a key of :data:`SIGNALS`: ``"basic-motions"`` (6 channels x 100 steps, 4 classes,
            40 + 40 cases), ``"gunpoint"`` (1 x 150, 2 classes, 50 + 150), ``"italy-power-demand"``
            (1 x 24, 2 classes, 67 + 1029).
        split: ``"train"`` or ``"test"``: the archive's own TRAIN and TEST files.

    Raises:
        DatasetNotFoundError: neither sktime nor aeon is installed; the message names
            ``pip install advlab[signals]``.
    """
    if name not in SIGNALS:
        raise ValueError(f"unknown signal set {name!r}; available: {', '.join(sorted(SIGNALS))}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = SIGNALS[name]
    train_file = _bundled_file(spec, "train")
    train_values, train_labels, header = read_ts(train_file)
    if split == "train":
        file, values, labels = train_file, train_values, train_labels
    else:
        file = _bundled_file(spec, "test")
        values, labels, _ = read_ts(file)
    declared = header.get("classlabel", "").split()[1:]  # "true A B C" -> the classes, in their order
    class_names = tuple(declared) if declared else tuple(sorted(set(train_labels)))
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise TsFormatError(f"{file}: labels {unknown} are not among the declared classes {list(class_names)}")
    lookup = {c: k for k, c in enumerate(class_names)}
    channels = values.shape[1]
    channel_names = spec.channel_names if spec.channel_names and len(spec.channel_names) == channels else (
        tuple(f"channel {c}" for c in range(channels)))
    scaling = FeatureScaling.fit(torch.from_numpy(train_values),
                                 fitted_on=f"train file ({train_values.shape[0]} series, every step)")
    raw = torch.from_numpy(values)
    x = scaling.to_unit(raw)
    package = file.parents[3].name
    return Dataset(
        name=name,
        x=x,
        y=torch.tensor([lookup[c] for c in labels], dtype=torch.int64),
        class_names=class_names,
        source=(f"{spec.archive_name}_{split.upper()}.ts bundled with {package} ({file}); channels min-max "
                f"scaled on the TRAIN file"),
        feature_names=channel_names,
        scaling=scaling,
    )
