"""The VAE behind the Fawzi et al. bounds: shapes, the ELBO terms, training, reproducibility, I/O."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from advlab.models.generative import VAE, elbo_terms, fit_vae, load_vae, save_vae


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a shared machine libgomp's
    spin-waiting stalls them (this module took 154 s with 2 threads under load, 15 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(digits):
    vae = VAE(in_shape=(1, 8, 8), latent_dim=4, hidden=64, seed=0)
    history = fit_vae(vae, digits["x_train"], epochs=4, batch_size=64, lr=3e-3, seed=0, progress=False)
    return vae, history


def test_shapes_and_output_range():
    vae = VAE(in_shape=(1, 8, 8), latent_dim=3, hidden=32)
    x = torch.rand(5, 1, 8, 8)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(0)) * 10
    out = vae.decode(z)
    assert out.shape == (7, 1, 8, 8)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    assert torch.equal(vae.decoder(z), out)
    assert vae(x).shape == x.shape


def test_kl_term_matches_torch_distributions():
    vae = VAE(in_shape=(1, 8, 8), latent_dim=3, hidden=32, seed=1)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, kl = elbo_terms(vae, x, torch.zeros(6, 3))
    mu, logvar = vae.encode(x)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(kl, expected, rtol=1e-5, atol=1e-5)


def test_training_lowers_the_loss_and_reconstructs(trained, digits):
    vae, history = trained
    assert len(history.loss) == 4
    assert history.loss[-1] < 0.8 * history.loss[0]
    untrained = VAE(in_shape=(1, 8, 8), latent_dim=4, hidden=64, seed=0)
    x = digits["x_test"]
    with torch.no_grad():
        err = (vae(x) - x).pow(2).mean()
        err0 = (untrained(x) - x).pow(2).mean()
    assert float(err) < 0.5 * float(err0)
    assert not vae.training


def test_seeded_and_leaves_global_rng_alone(digits):
    state = torch.random.get_rng_state()
    a = VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16, seed=3)
    b = VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16, seed=3)
    x = digits["x_train"][:256]
    fit_vae(a, x, epochs=1, batch_size=64, seed=5, progress=False)
    fit_vae(b, x, epochs=1, batch_size=64, seed=5, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_save_load_roundtrip(trained, tmp_path):
    vae, _ = trained
    save_vae(vae, tmp_path / "vae", extra={"epochs": 4})
    loaded, extra = load_vae(tmp_path / "vae")
    assert extra == {"epochs": 4}
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), vae.decode(z))


def test_bad_input(digits):
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(in_shape=(1, 8, 8), latent_dim=0)
    with pytest.raises(ValueError, match="in_shape"):
        VAE(in_shape=(8, 8), latent_dim=2)
    vae = VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_vae(vae, digits["x_train"][:64] * 2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="shape"):
        fit_vae(vae, torch.rand(10, 1, 7, 7), epochs=1, progress=False)
    with pytest.raises(ValueError, match="latent codes"):
        vae.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="epochs"):
        fit_vae(vae, digits["x_train"][:64], epochs=0, progress=False)
    with pytest.raises(FileNotFoundError):
        load_vae("/nonexistent/vae")
