"""The in-memory :class:`Dataset` every loader in :mod:`advlab.data` returns, of any input shape.

Images are ``(N, C, H, W)``, tables ``(N, D)``, signals ``(N, C, T)`` (channels by time steps); every
value lies in ``[0, 1]``. Tables and signals read in other units carry a :class:`FeatureScaling`
that maps them back (one ``(low, high)`` per feature or channel, fitted on the training split).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Dataset", "FeatureScaling", "KINDS"]

#: what the rank of ``x`` says a dataset holds: ``(N, D)`` rows of features, ``(N, C, T)`` signals,
#: ``(N, C, H, W)`` images (a higher rank is accepted and called ``"tensor"``)
KINDS = {2: "table", 3: "signal", 4: "image"}

#: the name of one example of each kind, for messages
_EXAMPLE = {"table": "rows", "signal": "series", "image": "images", "tensor": "examples"}


@dataclass(frozen=True)
class FeatureScaling:
    """The min-max map between a dataset's ``[0, 1]`` values and their original units.

    One ``(low, high)`` pair per index of axis 1 (a table's feature, a signal's channel):
    ``original = low + value * (high - low)``. The ranges were fitted on ``fitted_on`` (the training
    split), so values of other splits outside that range were clipped to ``[0, 1]``.

    Attributes:
        low, high: the original value that ``0`` and ``1`` stand for, per feature (or channel);
            ``high >= low`` (a constant feature has ``high == low`` and scales to ``0``).
        fitted_on: what the ranges were computed from, e.g. ``"train split (426 rows)"``.

    Example:
        >>> s = FeatureScaling(low=(0.0, 10.0), high=(2.0, 20.0), fitted_on="by hand")
        >>> s.to_original(torch.tensor([[0.5, 0.5]])).tolist()
        [[1.0, 15.0]]
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    fitted_on: str = ""

    def __post_init__(self) -> None:
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        if len(low) != len(high) or not low:
            raise ValueError(f"FeatureScaling: low and high need one value per feature, got {len(low)} "
                             f"and {len(high)}")
        bad = [i for i, (a, b) in enumerate(zip(low, high)) if not (math.isfinite(a) and math.isfinite(b) and b >= a)]
        if bad:
            raise ValueError(f"FeatureScaling: low and high must be finite with high >= low; feature(s) {bad} "
                             "are not")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def fit(cls, raw: torch.Tensor, *, fitted_on: str = "") -> FeatureScaling:
        """The per-index-of-axis-1 minimum and maximum of ``raw`` ``(N, F, *)`` (finite values)."""
        if raw.ndim < 2 or raw.shape[0] == 0:
            raise ValueError(f"FeatureScaling.fit: needs (N, F, ...) with N >= 1, got {tuple(raw.shape)}")
        flat = raw.detach().to(torch.float64).transpose(0, 1).reshape(raw.shape[1], -1)  # (F, N * rest)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("FeatureScaling.fit: the values contain NaN or infinity; drop or impute them first")
        return cls(low=tuple(flat.min(dim=1).values.tolist()), high=tuple(flat.max(dim=1).values.tolist()),
                   fitted_on=fitted_on)

    def __len__(self) -> int:
        return len(self.low)

    def _view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim < 2 or x.shape[1] != len(self):
            raise ValueError(f"FeatureScaling: expected (N, {len(self)}, ...), got {tuple(x.shape)}")
        shape = (1, len(self), *([1] * (x.ndim - 2)))
        low = torch.tensor(self.low, dtype=torch.float64, device=x.device).view(shape)
        high = torch.tensor(self.high, dtype=torch.float64, device=x.device).view(shape)
        return low, high

    def to_original(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F, *)`` values in ``[0, 1]`` -> original units, ``float64``."""
        low, high = self._view(x)
        return low + x.to(torch.float64) * (high - low)

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """``(N, F, *)`` original units -> ``[0, 1]`` ``float32``, clipped (a constant feature gives 0)."""
        low, high = self._view(raw)
        span = high - low
        scaled = torch.where(span > 0, (raw.to(torch.float64) - low) / torch.where(span > 0, span, 1.0),
                             torch.zeros_like(span))
        return scaled.clamp_(0.0, 1.0).to(torch.float32)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held in memory as two tensors: images, tables or signals.

    Attributes:
        name: short identifier, e.g. ``"fashion-mnist"``.
        x: inputs, ``float32``, every value finite and in ``[0, 1]``: images ``(N, C, H, W)``,
            a table ``(N, D)`` or signals ``(N, C, T)`` (see :attr:`kind`).
        y: labels, shape ``(N,)``, ``int64``, each in ``range(len(class_names))``.
        class_names: one human-readable name per class; label ``k`` means ``class_names[k]``.
        source: where the data came from (path, URL, package), kept for provenance.
        feature_names: a name per index of axis 1 (a table's columns, a signal's channels), or
            ``None``.
        scaling: how the ``[0, 1]`` values map back to original units (:class:`FeatureScaling`,
            one range per index of axis 1), or ``None`` when they are the original values.

    The tensors are validated once, here; a ``Dataset`` never copies or moves them to
    another device.

    Example:
        >>> ds = Dataset(name="toy", x=torch.zeros(4, 1, 2, 2), y=torch.tensor([0, 1, 0, 1]),
        ...              class_names=("a", "b"), source="made by hand")
        >>> ds.num_classes, ds.input_shape, len(ds.subset(3))
        (2, (1, 2, 2), 3)
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    source: str
    feature_names: tuple[str, ...] | None = None
    scaling: FeatureScaling | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Dataset name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.source, str):
            raise TypeError(f"Dataset source must be a string, got {type(self.source).__name__}")
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError(
                f"Dataset {self.name!r}: x and y must be torch.Tensor, "
                f"got {type(self.x).__name__} and {type(self.y).__name__}"
            )
        # Accept any sequence of strings for convenience, store a tuple (the dataclass is frozen).
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise TypeError(
                f"Dataset {self.name!r}: class_names must be a sequence of strings, "
                f"got {type(self.class_names).__name__}"
            )
        class_names = tuple(self.class_names)
        object.__setattr__(self, "class_names", class_names)
        if self.feature_names is not None:
            if isinstance(self.feature_names, str) or not isinstance(self.feature_names, Sequence):
                raise TypeError(f"Dataset {self.name!r}: feature_names must be a sequence of strings, "
                                f"got {type(self.feature_names).__name__}")
            object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if self.scaling is not None and not isinstance(self.scaling, FeatureScaling):
            raise TypeError(f"Dataset {self.name!r}: scaling must be a FeatureScaling, got "
                            f"{type(self.scaling).__name__}")
        self._validate()

    def _validate(self) -> None:
        name, x, y, class_names = self.name, self.x, self.y, self.class_names
        if not class_names:
            raise ValueError(f"Dataset {name!r}: class_names is empty; a classifier needs classes")
        if not all(isinstance(c, str) for c in class_names):
            raise ValueError(f"Dataset {name!r}: every class name must be a string, got {class_names!r}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"Dataset {name!r}: class names are not unique: {class_names!r}")
        if x.ndim < 2:
            raise ValueError(
                f"Dataset {name!r}: x must have shape (N, D) for a table, (N, C, T) for signals or "
                f"(N, C, H, W) for images, got {tuple(x.shape)}; a single feature is x.unsqueeze(1)"
            )
        if x.dtype != torch.float32:
            raise ValueError(
                f"Dataset {name!r}: x must be float32 in [0, 1], got {x.dtype}; "
                "convert uint8 images with x.float() / 255"
            )
        if y.ndim != 1:
            raise ValueError(f"Dataset {name!r}: y must have shape (N,), got {tuple(y.shape)}")
        if y.dtype != torch.int64:
            raise ValueError(f"Dataset {name!r}: y must be int64, got {y.dtype}; use y.long()")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"Dataset {name!r}: x has {x.shape[0]} {_EXAMPLE[self.kind]} but y has {y.shape[0]} labels"
            )
        for what, per_index in (("feature_names", self.feature_names), ("scaling", self.scaling)):
            if per_index is not None and len(per_index) != x.shape[1]:
                raise ValueError(
                    f"Dataset {name!r}: {what} has {len(per_index)} entries but x has {x.shape[1]} "
                    f"{'features' if self.kind == 'table' else 'channels'} (axis 1 of {tuple(x.shape)})"
                )
        if self.feature_names is not None and not all(isinstance(f, str) for f in self.feature_names):
            raise ValueError(f"Dataset {name!r}: every feature name must be a string")
        if x.numel() > 0:
            # aminmax propagates NaN and is ~50x faster than isfinite().all() on CPU;
            # an infinity fails the range check.
            lo_t, hi_t = torch.aminmax(x)
            lo, hi = float(lo_t), float(hi_t)
            if math.isnan(lo) or math.isnan(hi):
                raise ValueError(f"Dataset {name!r}: x contains NaN values")
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(
                    f"Dataset {name!r}: x must lie in [0, 1], found values in [{lo:g}, {hi:g}]; "
                    "rescale it (e.g. divide 8-bit images by 255)"
                )
        if y.numel() > 0:
            lo_y, hi_y = int(y.min()), int(y.max())
            if lo_y < 0 or hi_y >= len(class_names):
                raise ValueError(
                    f"Dataset {name!r}: labels must lie in [0, {len(class_names) - 1}] "
                    f"(one per class name), found labels in [{lo_y}, {hi_y}]"
                )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )

    @property
    def kind(self) -> str:
        """``"table"`` for ``(N, D)``, ``"signal"`` for ``(N, C, T)``, ``"image"`` for ``(N, C, H, W)``
        (``"tensor"`` for a higher rank)."""
        return KINDS.get(self.x.ndim, "tensor")

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)`` (some may have no examples in a subset)."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(C, H, W)``, ``(D,)`` or ``(C, T)``."""
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, indices_or_n: int | Sequence[int] | torch.Tensor) -> Dataset:
        """Return a smaller dataset.

        Args:
            indices_or_n: an ``int`` ``n`` keeps the first ``n`` examples (``0 <= n <= len``);
                a sequence or 1-D integer tensor keeps those indices, in that order
                (repeats allowed); a boolean tensor of length ``len(self)`` is a mask.

        Returns:
            A new :class:`Dataset` with the same name and class names; ``source`` records
            the selection.
        """
        n_total = len(self)
        if isinstance(indices_or_n, bool):
            raise TypeError("subset() takes an int or indices, not a bool")
        if isinstance(indices_or_n, int):
            n = indices_or_n
            if not 0 <= n <= n_total:
                raise ValueError(f"subset({n}): n must be in [0, {n_total}] for dataset {self.name!r}")
            return self._select(slice(0, n), f"first {n}")

        index = torch.as_tensor(indices_or_n)
        if index.dtype == torch.bool:
            if index.shape != (n_total,):
                raise ValueError(
                    f"subset(): a boolean mask must have shape ({n_total},), got {tuple(index.shape)}"
                )
            index = index.nonzero().squeeze(1)
        if index.ndim != 1:
            raise ValueError(f"subset(): indices must be 1-D, got shape {tuple(index.shape)}")
        if index.numel() == 0:
            index = index.to(torch.int64)
        if index.is_floating_point() or index.is_complex():
            raise TypeError(f"subset(): indices must be integers, got {index.dtype}")
        index = index.to(device=self.y.device, dtype=torch.int64)
        if index.numel() > 0:
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= n_total:
                raise IndexError(
                    f"subset(): indices must lie in [0, {n_total - 1}] for dataset {self.name!r}, "
                    f"got values in [{lo}, {hi}]"
                )
        return self._select(index, f"{index.numel()} indices")

    def _select(self, index: slice | torch.Tensor, description: str) -> Dataset:
        x_index = index if isinstance(index, slice) else index.to(self.x.device)
        return Dataset(
            name=self.name,
            x=self.x[x_index],
            y=self.y[index],
            class_names=self.class_names,
            source=f"{self.source} | subset: {description}",
            feature_names=self.feature_names,
            scaling=self.scaling,
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over ``(x, y)`` mini-batches, shapes ``(B, *input_shape)`` and ``(B,)``.

        Args:
            batch_size: examples per batch (the last batch may be smaller).
            shuffle: visit the examples in a random order drawn from ``generator``.
            generator: the source of randomness; required when ``shuffle=True`` so that
                the order is reproducible and the global RNG is never touched.
            drop_last: skip a final batch smaller than ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if shuffle and generator is None:
            raise ValueError(
                "shuffle=True needs an explicit generator, e.g. generator=torch.Generator().manual_seed(0)"
            )
        if generator is not None and not shuffle:
            raise ValueError("a generator was given but shuffle=False; pass shuffle=True to use it")
        return self._iter_batches(batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)

    def _iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        drop_last: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield self.x[start:end], self.y[start:end]
            else:
                idx = order[start:end]
                yield self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)]
