"""Cache location, checksummed downloads and file verification.

A download streams into a temporary file next to its destination, hashing as it goes,
and is renamed into place only once its size and SHA-256 match the published values;
on any failure the temporary file is deleted, so the cache never holds a partial or
unverified file.

Tests (and users behind unusual proxies) replace the network with ``opener=`` or by
monkeypatching :data:`_open_url`; a ``file://`` base URL also works with the default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from .errors import ChecksumError, DownloadError

__all__ = ["RemoteFile", "default_cache_dir", "download_file", "file_sha256", "verify_file"]

logger = logging.getLogger(__name__)

#: ``opener(url, timeout=seconds)`` returning a readable binary response (a context manager).
Opener = Callable[..., BinaryIO]

#: The default opener; monkeypatch this to serve files without a network.
_open_url: Opener = urllib.request.urlopen

_CHUNK = 1 << 20
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """A file published at a fixed location with known size and checksums.

    Attributes:
        name: file name, e.g. ``"t10k-images-idx3-ubyte.gz"``.
        size: size in bytes.
        sha256: SHA-256 hex digest of the file as published; what downloads are checked against.
        md5: MD5 hex digest as published by the dataset's authors, for cross-reference only.
    """

    name: str
    size: int
    sha256: str
    md5: str | None = None


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where advlab keeps downloaded files.

    The first of: ``cache_dir``; ``$ADVLAB_CACHE``; ``$XDG_CACHE_HOME/advlab``;
    ``~/.cache/advlab``. Empty environment variables count as unset.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if env := os.environ.get("ADVLAB_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "advlab"
    return Path.home() / ".cache" / "advlab"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: RemoteFile) -> None:
    """Check a file's size and SHA-256 against ``expected``.

    Raises:
        ChecksumError: size or digest differ; the message says what to do.
    """
    path = Path(path)
    size = path.stat().st_size
    if size != expected.size:
        raise ChecksumError(
            f"{path}: size {size} bytes differs from the published {expected.size} bytes; "
            "delete the file and download it again"
        )
    actual = file_sha256(path)
    if actual != expected.sha256:
        raise ChecksumError(
            f"{path}: SHA-256 {actual} differs from the published {expected.sha256}; "
            "delete the file and download it again"
        )


def download_file(
    url: str,
    destination: str | os.PathLike[str],
    *,
    expected: RemoteFile,
    timeout: float = DEFAULT_TIMEOUT_S,
    opener: Opener | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``destination`` and verify it; atomic and checksummed.

    Args:
        url: what to fetch (``http(s)://`` or ``file://``).
        destination: final path; its directory is created if needed.
        expected: the published size and SHA-256 the bytes must match.
        timeout: socket timeout in seconds for connecting and for each read.
        opener: ``opener(url, timeout=...)`` returning a binary response; defaults to
            :data:`_open_url` (``urllib.request.urlopen``).
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``destination`` as a :class:`~pathlib.Path`, now holding the verified file.

    Raises:
        DownloadError: the transfer failed; nothing is left behind.
        ChecksumError: the bytes arrived but do not match; nothing is left behind.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    open_fn = opener if opener is not None else _open_url
    logger.info("Downloading %s -> %s", url, destination)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    tmp = Path(tmp_name)
    sha256 = hashlib.sha256()
    received = 0
    try:
        try:
            with os.fdopen(fd, "wb") as out, open_fn(url, timeout=timeout) as response:
                total = _content_length(response) or expected.size
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=destination.name,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        sha256.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # URLError and TimeoutError are OSErrors; ValueError covers malformed URLs.
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"Could not download {url}: {reason}") from exc
        if received != expected.size:
            raise ChecksumError(
                f"Downloaded {url}: got {received} bytes, expected {expected.size}; "
                "the transfer was cut short or the server holds a different file. Nothing was saved."
            )
        actual = sha256.hexdigest()
        if actual != expected.sha256:
            raise ChecksumError(
                f"Downloaded {url}: SHA-256 {actual} differs from the published {expected.sha256}; "
                "the file is corrupt or was changed upstream. Nothing was saved."
            )
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("Verified %s (sha256 %s)", destination, actual)
    return destination


def _content_length(response: object) -> int | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
