"""A small variational autoencoder: the smooth generator ``g`` of Fawzi, Fawzi & Fawzi (2018).

The theory of :mod:`advlab.evaluation.theory` assumes data ``x = g(z)`` with ``z ~ N(0, I_d)`` and a
Lipschitz ``g``. :class:`VAE` (Kingma & Welling, ICLR 2014) supplies one: an MLP encoder
``q(z | x) = N(mu(x), diag(exp(logvar(x))))`` and an MLP decoder whose sigmoid output is the mean of a
Bernoulli likelihood, so ``g = vae.decode`` maps latent codes ``(B, d)`` to images ``(B, C, H, W)``
in ``[0, 1]`` (the input box every attack uses). The decoder is also a module of its own,
``vae.decoder``, which is what the theory functions take as ``g``.

Training (:func:`fit_vae`) minimises the negative ELBO per image,
``BCE(decode(z), x) + KL(q(z | x) || N(0, I))`` summed over pixels and latent dimensions, with the
reparameterised ``z = mu + exp(logvar / 2) * eps``; ``eps`` comes from an explicit
:class:`torch.Generator`, never the global RNG.

Example::

    vae = VAE(in_shape=(1, 28, 28), latent_dim=8)           # seeded by `seed`
    history = fit_vae(vae, x_train, epochs=5, seed=0)
    x = vae.decode(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))  # (16, 1, 28, 28)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["VAE", "Decoder", "VAEHistory", "elbo_terms", "fit_vae", "save_vae", "load_vae"]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "vae.safetensors"
CONFIG_FILE = "vae.json"


def _check_in_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(in_shape, torch.Size):
        in_shape = tuple(in_shape)
    if (not isinstance(in_shape, Sequence) or isinstance(in_shape, str) or len(in_shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in in_shape)):
        raise ValueError(f"VAE: in_shape must be three positive integers (C, H, W), got {in_shape!r}")
    return tuple(int(d) for d in in_shape)  # type: ignore[return-value]


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class Decoder(nn.Module):
    """``z (B, d) -> x (B, C, H, W)`` in ``[0, 1]``: Linear-ELU-Linear-ELU-Linear-sigmoid.

    ELU (not ReLU) keeps the map continuously differentiable, so its Jacobian, whose largest
    singular value bounds the Lipschitz constant, varies smoothly with ``z``.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_shape = in_shape
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden // 2), nn.ELU(),
            nn.Linear(hidden // 2, hidden), nn.ELU(),
            nn.Linear(hidden, math.prod(in_shape)),
        )

    def logits(self, z: Tensor) -> Tensor:
        """Pre-sigmoid outputs ``(B, C*H*W)``: the Bernoulli logits used by the training loss."""
        return self.net(z)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z)).view(z.shape[0], *self.in_shape)  # (B, C, H, W)


class VAE(nn.Module):
    """A fully connected variational autoencoder with a Gaussian prior ``N(0, I_d)``.

    Args:
        in_shape: image shape ``(C, H, W)``; images are floats in ``[0, 1]``.
        latent_dim: ``d >= 1``, the dimension of ``z``.
        hidden: width of the widest hidden layer (encoder ``D -> hidden -> hidden/2 -> 2d``,
            decoder the mirror image).
        seed: initialises the weights under a forked RNG (the global RNG is left untouched).

    Shapes: ``encode(x (B, C, H, W)) -> (mu (B, d), logvar (B, d))``;
    ``decode(z (B, d)) -> (B, C, H, W)`` in ``[0, 1]``; ``forward(x)`` reconstructs from ``mu``.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], latent_dim: int, hidden: int = 400,
                 seed: int = 0) -> None:
        super().__init__()
        in_shape = _check_in_shape(in_shape)
        _check_int("latent_dim", latent_dim)
        _check_int("hidden", hidden, 2)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.in_shape = in_shape
        self.latent_dim = latent_dim
        self.hidden = hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(
                nn.Flatten(),
                nn.Linear(math.prod(in_shape), hidden), nn.ELU(),
                nn.Linear(hidden, hidden // 2), nn.ELU(),
                nn.Linear(hidden // 2, 2 * latent_dim),
            )
            self.decoder = Decoder(in_shape=in_shape, latent_dim=latent_dim, hidden=hidden)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance, each ``(B, d)``."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"VAE.encode: expected inputs (B, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """The generator ``g``: ``(B, d) -> (B, C, H, W)`` in ``[0, 1]``."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"VAE.decode: expected latent codes (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction ``decode(mu(x))``."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` codes ``z ~ N(0, I)`` ``(n, d)`` and their images ``g(z)`` ``(n, C, H, W)``, no grad.

        Without a generator a fresh one seeded with 0 is used (the global RNG is never touched).
        """
        _check_int("n", n)
        device = next(self.parameters()).device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        with torch.no_grad():
            return z, self.decode(z)

    def config(self) -> dict[str, Any]:
        return {"in_shape": list(self.in_shape), "latent_dim": self.latent_dim, "hidden": self.hidden}


@dataclass
class VAEHistory:
    """Per-epoch means per image of the negative ELBO and its two terms."""

    loss: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def elbo_terms(vae: VAE, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image reconstruction BCE and KL ``(B,)`` for given standard-normal ``noise`` ``(B, d)``."""
    mu, logvar = vae.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    logits = vae.decoder.logits(z)
    rec = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(dim=1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    return rec, kl


def fit_vae(vae: VAE, x: Tensor, *, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
            seed: int = 0, progress: bool = True) -> VAEHistory:
    """Train ``vae`` in place on images ``x`` ``(N, C, H, W)`` in ``[0, 1]`` (labels are not used).

    Adam on the negative ELBO (Bernoulli likelihood, i.e. pixel-wise BCE against the grey levels,
    plus the KL to ``N(0, I)``), mini-batches shuffled and reparameterisation noise drawn from one
    :class:`torch.Generator` seeded with ``seed``. The VAE is left in eval mode.
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be an advlab.models.generative.VAE, got {type(vae).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor of images (N, C, H, W)")
    if tuple(x.shape[1:]) != vae.in_shape:
        raise ValueError(f"x has samples of shape {tuple(x.shape[1:])} but the VAE was built for "
                         f"{vae.in_shape}")
    if x.shape[0] == 0:
        raise ValueError("x is empty")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"x must lie in [0, 1] (Bernoulli likelihood), got [{lo:.4g}, {hi:.4g}]")
    _check_int("epochs", epochs)
    _check_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    device = next(vae.parameters()).device
    if x.device != device:
        raise ValueError(f"the VAE is on {device} but x is on {x.device}; put both on one device")

    history = VAEHistory(settings={"epochs": epochs, "batch_size": batch_size, "lr": float(lr),
                                   "seed": seed, "num_samples": int(x.shape[0]), **vae.config()})
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    n = x.shape[0]
    try:
        vae.train()
        for epoch in range(epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen, device=device)
            sums = torch.zeros(3, dtype=torch.float64)
            bar = tqdm(range(0, n, batch_size), desc=f"VAE epoch {epoch + 1}/{epochs}",
                       disable=not progress, unit="batch")
            for i in bar:
                xb = x[order[i:i + batch_size]]
                noise = torch.randn(xb.shape[0], vae.latent_dim, generator=gen, device=device)
                rec, kl = elbo_terms(vae, xb, noise)
                loss = (rec + kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.tensor([float(loss.detach()) * xb.shape[0], float(rec.detach().sum()),
                                      float(kl.detach().sum())], dtype=torch.float64)
            mean = (sums / n).tolist()
            if not math.isfinite(mean[0]):
                raise FloatingPointError(f"VAE training diverged in epoch {epoch + 1}; lower lr")
            history.loss.append(mean[0])
            history.reconstruction.append(mean[1])
            history.kl.append(mean[2])
            history.seconds.append(time.perf_counter() - t0)
            logger.info("VAE epoch %d/%d: -ELBO %.2f (BCE %.2f, KL %.2f) per image, %.1fs",
                        epoch + 1, epochs, mean[0], mean[1], mean[2], history.seconds[-1])
    finally:
        vae.eval()
    return history


def save_vae(vae: VAE, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path/vae.safetensors`` and ``path/vae.json`` (architecture plus ``extra``)."""
    from safetensors.torch import save_file

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(
        json.dumps({**vae.config(), "extra": extra or {}}, indent=2) + "\n", encoding="utf-8")
    return directory


def load_vae(path: str | os.PathLike[str]) -> tuple[VAE, dict[str, Any]]:
    """Inverse of :func:`save_vae`: the VAE (CPU, eval mode) and the stored ``extra`` dict."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from advlab._io import read_json

    directory = Path(path)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"no VAE checkpoint in {directory} (need {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_json(config_path, "VAE config")
    if not isinstance(config, dict):
        raise ValueError(f"VAE config {config_path} must hold a JSON object")
    if not isinstance(config.get("extra", {}), dict):
        raise ValueError(f"VAE config {config_path}: extra must be a JSON object, got {config['extra']!r}")
    try:
        with torch.device("meta"):  # no memory from the config's claims until the weights fit them
            # as written, not int(): 2.7 must not become 2, inf must not raise OverflowError
            vae = VAE(in_shape=config["in_shape"], latent_dim=config["latent_dim"], hidden=config["hidden"])
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        expected = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
        if found != expected:
            raise ValueError("its weights do not have the shapes its config describes")
        state = load_file(str(weights_path))
        if not all(t.is_floating_point() for t in state.values()):  # load_state_dict would cast them
            raise ValueError("its weights are not all floating point")
        vae = vae.to_empty(device="cpu")
        vae.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as err:
        raise ValueError(f"the VAE checkpoint in {directory} is corrupt or does not fit its config "
                         f"({type(err).__name__}: {err})") from None
    return vae.eval(), dict(config.get("extra", {}))
