"""scikit-learn's bundled diabetes data as a regression task: tensors in a box, a seeded split,
and what each feature is (442 patients, 10 baseline measurements, shipped inside scikit-learn).

Efron, Hastie, Johnstone & Tibshirani, "Least Angle Regression", Annals of Statistics 2004: the
target is a quantitative measure of disease progression one year after baseline (25..346).

Example:
    >>> data = load_diabetes_regression()
    >>> data.x_train.shape, data.y_train.shape, data.feature_names[:3]
    (torch.Size([331, 10]), torch.Size([331]), ('age', 'sex', 'bmi'))
    >>> data.to_raw_features(data.x_test[:1]), data.to_raw_target(data.y_test[:1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DIABETES_SEED", "DIABETES_TEST_FRACTION", "RegressionData", "RegressionFeature",
           "load_diabetes_regression"]

DIABETES_TEST_FRACTION = 0.25
DIABETES_SEED = 0

# sklearn's DESCR, one line per feature: (name, description, kind)
_FEATURES = (
    ("age", "age in years", "continuous"),
    ("sex", "sex (two codes, 1 and 2)", "binary"),
    ("bmi", "body mass index", "continuous"),
    ("bp", "average blood pressure", "continuous"),
    ("s1", "tc, total serum cholesterol", "continuous"),
    ("s2", "ldl, low-density lipoproteins", "continuous"),
    ("s3", "hdl, high-density lipoproteins", "continuous"),
    ("s4", "tch, total cholesterol / HDL", "continuous"),
    ("s5", "ltg, possibly log of serum triglycerides level", "continuous"),
    ("s6", "glu, blood sugar level", "continuous"),
)


@dataclass(frozen=True)
class RegressionFeature:
    """One input feature: its name, what it measures, its raw range, and its kind.

    ``low``/``high`` are the smallest and largest raw values over the whole data set; the feature
    is mapped linearly from ``[low, high]`` onto the data's ``bounds``. ``kind`` is
    ``"continuous"``, ``"binary"`` (two codes only: an optimiser moving it continuously makes a
    value no patient has) or ``"noise"`` (an added column the target does not depend on).
    """

    name: str
    description: str
    low: float
    high: float
    kind: str


@dataclass(frozen=True, eq=False)
class RegressionData:
    """A regression data set in memory: features in a box, real-valued targets, a fixed split.

    Attributes:
        name: short identifier, e.g. ``"diabetes"``.
        x_train, x_test: ``(N, D)`` float32 features, each in ``bounds``.
        y_train, y_test: ``(N,)`` float32 targets (standardised with the *training* mean and
            standard deviation when ``target_standardised``; see :meth:`to_raw_target`).
        features: one :class:`RegressionFeature` per column.
        bounds: ``(lo, hi)``, the box every feature was scaled into.
        target_name: what the target measures.
        target_mean, target_std: the raw target's training mean and standard deviation (used for
            the standardisation, and kept either way).
        target_standardised: whether ``y`` is ``(raw − mean) / std`` (else the raw target).
        source: where the data came from and how it was split, for provenance.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    features: tuple[RegressionFeature, ...]
    bounds: tuple[float, float]
    target_name: str
    target_mean: float
    target_std: float
    target_standardised: bool
    source: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def num_features(self) -> int:
        return len(self.features)

    def _ranges(self, like: Tensor) -> tuple[Tensor, Tensor]:
        low = torch.tensor([f.low for f in self.features], dtype=like.dtype, device=like.device)
        high = torch.tensor([f.high for f in self.features], dtype=like.dtype, device=like.device)
        return low, high

    def to_raw_features(self, x: Tensor) -> Tensor:
        """Features ``(N, D)`` in ``bounds`` back to raw units (years, mmHg, ...)."""
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), got {tuple(x.shape)}")
        low, high = self._ranges(x)
        lo, hi = self.bounds
        return low + (x - lo) / (hi - lo) * (high - low)

    def to_raw_target(self, y: Tensor) -> Tensor:
        """Targets (or a model's predictions) back to the raw scale of the target."""
        return y * self.target_std + self.target_mean if self.target_standardised else y


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint ``(train, test)`` indices; a private ``RandomState`` (stable across NumPy
    versions), never the global RNG."""
    perm = np.random.RandomState(seed).permutation(n)
    n_test = min(n - 1, max(1, int(math.floor(test_fraction * n + 0.5))))  # halves round up
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_diabetes_regression(*, bounds: tuple[float, float] = (0.0, 1.0),
                             test_fraction: float = DIABETES_TEST_FRACTION, seed: int = DIABETES_SEED,
                             standardise_target: bool = True, noise_features: int = 0) -> RegressionData:
    """Load scikit-learn's diabetes data (``sklearn.datasets.load_diabetes``, no download).

    Each raw feature is mapped linearly from its range over all 442 patients onto ``bounds``
    (the box of values seen in the data; an attack's box). The split is a seeded random
    permutation: ``test_fraction · 442`` test points, rounded half up (111 at the default), the rest train.
    The target is standardised with the training mean and standard deviation unless
    ``standardise_target=False``.

    ``noise_features`` appends that many columns drawn uniformly from ``bounds`` (seeded with
    ``seed``, kind ``"noise"``): inputs the target does not depend on, which a model fitted on
    few points still uses, and an input optimiser can exploit.

    Returns:
        A :class:`RegressionData` with ``x`` ``(N, 10 + noise_features)`` and ``y`` ``(N,)``.
    """
    from advlab.threat import ThreatModel

    bounds = ThreatModel(norm="linf", eps=0.0, bounds=bounds).bounds  # raises on bad bounds
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(noise_features, bool) or not isinstance(noise_features, int) or noise_features < 0:
        raise ValueError(f"noise_features must be an integer >= 0, got {noise_features!r}")
    if not isinstance(standardise_target, bool):
        raise TypeError(f"standardise_target must be True or False, got {standardise_target!r}")
    import sklearn
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    raw = np.asarray(bunch.data, dtype=np.float64)  # (442, 10)
    target = np.asarray(bunch.target, dtype=np.float64)  # (442,)
    low, high = raw.min(axis=0), raw.max(axis=0)
    lo, hi = bounds
    x = lo + (raw - low) / (high - low) * (hi - lo)
    features = [RegressionFeature(name=name, description=desc, low=float(a), high=float(b), kind=kind)
                for (name, desc, kind), a, b in zip(_FEATURES, low, high)]
    if noise_features:
        rng = np.random.RandomState(seed + 1)
        x = np.concatenate([x, rng.uniform(lo, hi, size=(x.shape[0], noise_features))], axis=1)
        features += [RegressionFeature(name=f"noise{i}", description="uniform noise, unrelated to the "
                                       "target", low=lo, high=hi, kind="noise")
                     for i in range(noise_features)]
    x = np.clip(x, lo, hi).astype(np.float32)  # (float32 rounding at the ends stays in the box)
    train, test = _split(x.shape[0], float(test_fraction), seed)
    mean, std = float(target[train].mean()), float(target[train].std())
    y = (target - mean) / std if standardise_target else target

    def t(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return RegressionData(
        name="diabetes", x_train=t(x[train]), y_train=t(y[train]), x_test=t(x[test]), y_test=t(y[test]),
        features=tuple(features), bounds=bounds,
        target_name="disease progression one year after baseline", target_mean=mean, target_std=std,
        target_standardised=standardise_target,
        source=(f"sklearn.datasets.load_diabetes(scaled=False) (scikit-learn {sklearn.__version__}); "
                f"features min-max scaled to {bounds}; random {1 - test_fraction:.0%}/{test_fraction:.0%} "
                f"split, seed {seed}" + (f"; {noise_features} uniform noise features" if noise_features
                                         else "")),
    )

