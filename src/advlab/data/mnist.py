"""MNIST and Fashion-MNIST: locate, verify, download and decode the IDX files.

Each dataset is described by data (:class:`IdxDatasetSpec` in :data:`IDX_DATASETS`);
the code below is shared.

Checksums. The SHA-256 values are those of the canonical ``.gz`` downloads:

* Fashion-MNIST: published in tensorflow/datasets ``url_checksums/fashion_mnist.txt``
  for the Zalando S3 URLs, and reproduced here from Debian's ``dataset-fashion-mnist``
  files. Debian's copies are the canonical files with the gzip header normalised by
  strip-nondeterminism (file name dropped, mtime set to 2020-06-05), so their own digests
  differ; restoring the header (``FNAME`` flag, original name, mtime 1504176606 for
  ``train-*`` and 1504176627 for ``t10k-*``) gives back files whose MD5s equal the ones
  Zalando publishes and whose SHA-256s equal the constants below. ``tests/data`` checks this.
* MNIST: published in tensorflow/datasets ``url_checksums/mnist.txt`` (CVDF mirror; the
  sizes are those of LeCun's files) and pinned by other projects against the
  ``ossci-datasets`` mirror used here; the MD5s are torchvision's. Debian does not package
  MNIST, so neither could be recomputed or cross-checked offline; downloads are checked
  against the size and SHA-256.

Files a user supplies (``root=``, ``$ADVLAB_DATA``, the Debian directory) are checked for
shape and label range only, so any faithful copy works, compressed or not; files in the
advlab cache were written by :func:`~advlab.data.download.download_file` and are
re-verified against the SHA-256 on every load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from .download import DEFAULT_TIMEOUT_S, RemoteFile, default_cache_dir, download_file, verify_file
from .errors import DatasetNotFoundError
from .idx import read_idx

__all__ = ["IDX_DATASETS", "IdxDatasetSpec", "load_idx_dataset"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class IdxDatasetSpec:
    """How to find and check one MNIST-style dataset.

    Attributes:
        name: registry name, also the sub-directory under ``$ADVLAB_DATA`` and the cache.
        title: display name for messages.
        class_names: label ``k`` is ``class_names[k]``.
        base_url: the canonical location; file URLs are ``base_url + file.name``.
        train: (images, labels) files of the training split.
        test: (images, labels) files of the test split.
        image_hw: height and width of every image.
        split_sizes: canonical example counts, ``(train, test)``; other counts only warn.
        system_dirs: directories a system package installs the files into.
        apt_package: the Debian package providing ``system_dirs``, if any.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    base_url: str
    train: tuple[RemoteFile, RemoteFile]
    test: tuple[RemoteFile, RemoteFile]
    image_hw: tuple[int, int] = (28, 28)
    split_sizes: tuple[int, int] = (60000, 10000)
    system_dirs: tuple[Path, ...] = ()
    apt_package: str | None = None

    def files(self, split: str) -> tuple[RemoteFile, RemoteFile]:
        """The (images, labels) files of ``split``."""
        return self.train if split == "train" else self.test

    def expected_count(self, split: str) -> int:
        """The canonical number of examples in ``split``."""
        return self.split_sizes[0] if split == "train" else self.split_sizes[1]


FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    # The S3 website endpoint serves plain HTTP only; integrity comes from the SHA-256.
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    train=(
        RemoteFile(
            "train-images-idx3-ubyte.gz", 26421880,
            sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz", 29515,
            sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            md5="25c81989df183df01b3e8a0aad5dffbe",
        ),
    ),
    test=(
        RemoteFile(
            "t10k-images-idx3-ubyte.gz", 4422102,
            sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            md5="bef4ecab320f06d8554ea6380940ec79",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz", 5148,
            sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            md5="bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    apt_package="dataset-fashion-mnist",
)

MNIST = IdxDatasetSpec(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(d) for d in range(10)),
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    train=(
        RemoteFile(
            "train-images-idx3-ubyte.gz", 9912422,
            sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz", 28881,
            sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            md5="d53e105ee54ea40749a09fcbcd1e9432",
        ),
    ),
    test=(
        RemoteFile(
            "t10k-images-idx3-ubyte.gz", 1648877,
            sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            md5="9fb629c4189551a2d022fa330f9573f3",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz", 4542,
            sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            md5="ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
)

#: Registry of the MNIST-style datasets, by name. Tests replace entries to serve small files.
IDX_DATASETS: dict[str, IdxDatasetSpec] = {spec.name: spec for spec in (FASHION_MNIST, MNIST)}


@dataclass(frozen=True)
class _Candidate:
    directory: Path
    label: str  # why this directory is searched, for messages and provenance
    verify: bool = False  # re-check SHA-256 (the advlab cache)


def _find_file(directory: Path, remote: RemoteFile) -> Path | None:
    """The file in ``directory``, gzip-compressed or not, preferring the canonical name."""
    names = [remote.name]
    if remote.name.endswith(".gz"):
        names.append(remote.name[: -len(".gz")])
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    return None


def _search_places(
    spec: IdxDatasetSpec, root: str | os.PathLike[str] | None, cache: Path
) -> list[_Candidate | str]:
    """Directories to search, in order; a string notes a place that could not be searched."""
    places: list[_Candidate | str] = []
    if root is not None:
        # a folder the user names is the only place looked in: falling through to another copy
        # (the Debian package, the cache) would silently use data they did not point at
        root_path = Path(root).expanduser()
        return [_Candidate(root_path, "root argument"), _Candidate(root_path / spec.name, "root argument")]
    places.append("root argument: not given")
    if env := os.environ.get("ADVLAB_DATA"):
        places.append(_Candidate(Path(env).expanduser() / spec.name, "$ADVLAB_DATA"))
    else:
        places.append(f"$ADVLAB_DATA/{spec.name}: $ADVLAB_DATA is not set")
    for directory in spec.system_dirs:
        label = f"Debian package {spec.apt_package}" if spec.apt_package else "system directory"
        places.append(_Candidate(directory, label))
    places.append(_Candidate(cache / spec.name, "advlab cache", verify=True))
    return places


def _describe_miss(directory: Path, files: tuple[RemoteFile, ...]) -> str:
    if not directory.exists():
        return "does not exist"
    if not directory.is_dir():
        return "is not a directory"
    missing = [f.name for f in files if _find_file(directory, f) is None]
    return "missing " + ", ".join(missing)


def _not_found_message(
    spec: IdxDatasetSpec,
    split: str,
    places: list[_Candidate | str],
    cache: Path,
) -> str:
    files = spec.files(split)
    wanted = " and ".join(f"{f.name} (or unzipped)" for f in files)
    lines = [f"{spec.title} ({split} split) not found. Looked for {wanted} in:"]
    for place in places:
        if isinstance(place, str):
            lines.append(f"  - {place}")
        else:
            lines.append(f"  - {place.directory} ({place.label}): {_describe_miss(place.directory, files)}")
    lines.append("Fix it with one of:")
    fixes = []
    if spec.apt_package:
        fixes.append(f"install the Debian package: sudo apt-get install {spec.apt_package}")
    fixes.append(
        "point at a directory holding the files: root=DIR (CLI: --data-dir DIR) "
        f"or set $ADVLAB_DATA so that $ADVLAB_DATA/{spec.name} holds them"
    )
    fixes.append(f"download them: download=True (from {spec.base_url} into {cache / spec.name})")
    lines += [f"  {i}. {fix}" for i, fix in enumerate(fixes, start=1)]
    return "\n".join(lines)


def _read_split(
    spec: IdxDatasetSpec, split: str, images_path: Path, labels_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    h, w = spec.image_hw
    if images.ndim != 3 or images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, {h}, {w}) for {spec.title}, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(spec.class_names):
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} is out of range for {len(spec.class_names)} classes"
        )
    expected = spec.expected_count(split)
    if images.shape[0] != expected:
        logger.warning(
            "%s %s split at %s has %d examples; the canonical split has %d",
            spec.title, split, images_path.parent, images.shape[0], expected,
        )
    return images, labels


def _to_dataset(spec: IdxDatasetSpec, images: np.ndarray, labels: np.ndarray, source: str) -> Dataset:
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)  # (N, 1, H, W)
    y = torch.from_numpy(labels).to(torch.int64)  # (N,)
    return Dataset(name=spec.name, x=x, y=y, class_names=spec.class_names, source=source)


def load_idx_dataset(
    spec: IdxDatasetSpec,
    *,
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> Dataset:
    """Load one split of an MNIST-style dataset, downloading it if asked.

    The split's two files are looked for in ``root`` (and ``root/<name>``) when it is given, and
    nowhere else; otherwise, in order, in ``$ADVLAB_DATA/<name>``; the system package directory; the advlab cache
    (``<cache>/<name>``, SHA-256 re-verified). If none holds them and ``download=True``,
    they are fetched from ``spec.base_url`` into the cache.

    Raises:
        DatasetNotFoundError: nothing found and ``download=False``.
        ChecksumError: a cached or downloaded file does not match the published SHA-256.
        DownloadError: the download failed.
        IdxFormatError, ValueError: a file is corrupt or has the wrong shape.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = spec.files(split)
    cache = default_cache_dir(cache_dir)
    places = _search_places(spec, root, cache)

    for place in places:
        if isinstance(place, str):
            continue
        images_path, labels_path = (_find_file(place.directory, f) for f in files)
        if images_path is None or labels_path is None:
            continue
        label = place.label
        if place.verify:
            # Only the canonical .gz files have published digests; an unzipped copy
            # someone put in the cache is checked like a user-supplied file.
            n_verified = 0
            for path, remote in zip((images_path, labels_path), files):
                if path.name == remote.name:
                    verify_file(path, remote)
                    n_verified += 1
            if n_verified == len(files):
                label += ", sha256 verified"
        logger.info("Loading %s %s split from %s (%s)", spec.title, split, place.directory, label)
        images, labels = _read_split(spec, split, images_path, labels_path)
        return _to_dataset(spec, images, labels, f"{place.directory} ({label})")

    if not download:
        raise DatasetNotFoundError(_not_found_message(spec, split, places, cache))

    target_dir = cache / spec.name
    for remote in files:
        destination = target_dir / remote.name
        if destination.is_file():
            verify_file(destination, remote)  # cached earlier; its partner was missing
        else:
            download_file(
                spec.base_url + remote.name, destination, expected=remote, timeout=timeout, progress=progress
            )
    images_path, labels_path = (target_dir / f.name for f in files)
    images, labels = _read_split(spec, split, images_path, labels_path)
    return _to_dataset(spec, images, labels, f"{target_dir} (downloaded from {spec.base_url}, sha256 verified)")
