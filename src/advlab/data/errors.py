"""Exceptions raised by :mod:`advlab.data`."""

from __future__ import annotations

__all__ = ["ChecksumError", "DatasetNotFoundError", "DownloadError"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk (and were not downloaded).

    The message lists every place that was searched and how to fix it.
    """


class DownloadError(OSError):
    """Fetching a file failed (network error, timeout, bad URL)."""


class ChecksumError(ValueError):
    """A file's size or SHA-256 differs from the published value."""
