"""Fawzi, Fawzi & Fawzi (2018) bounds: closed forms by hand, the Lipschitz estimate against exact
values, the minimal latent/input perturbations (they flip, they are tight, r_unc <= r_in), the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _helpers import assert_unchanged, snapshot
from scipy.stats import norm
from torch import nn

from advlab.evaluation.theory import (
    BOUND_COLUMN,
    MEDIAN_FACTOR,
    BoundsTable,
    LatentSearch,
    bounds_table,
    fawzi_bound,
    fawzi_bound_classwise,
    latent_search,
    lipschitz_estimate,
    measure_robustness,
    median_upper_bound,
    median_upper_bound_classwise,
)
from advlab.models.generative import VAE, fit_vae

N = 24  # generated points per measurement: enough for the invariants, fast on CPU
FAST = LatentSearch(steps=30, refine_steps=4, targets=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a shared machine libgomp's
    spin-waiting stalls them (this module took 154 s with 2 threads under load, 15 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae(digits):
    model = VAE(in_shape=(1, 8, 8), latent_dim=4, hidden=64, seed=0)
    fit_vae(model, digits["x_train"], epochs=3, batch_size=64, lr=3e-3, seed=0, progress=False)
    return model


@pytest.fixture(scope="module")
def z():
    return torch.randn(N, 4, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def table(vae, cnn_model, mlp_model, digits):
    return bounds_table({"cnn": cnn_model, "mlp": mlp_model}, vae.decoder, latent_dim=4, n=N, seed=3,
                        lipschitz_samples=64, test_data=(digits["x_test"], digits["y_test"]),
                        search=FAST, progress=False)


# -- closed forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eta,L", [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (3.7, 1.0),
                                   (0.9, 0.3), (4.0, 2.5), (10.0, 2.5)])
def test_fawzi_bound_by_hand(eta, L):
    expected = max(0.0, 1.0 - math.sqrt(math.pi / 2) * math.exp(-((eta / L) ** 2) / 2))
    value = fawzi_bound(eta, L)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_fawzi_bound_arrays_limits_and_median():
    etas = np.array([0.0, 0.1, 1.0, 2.0, np.inf])
    out = fawzi_bound(etas, 2.0)
    assert isinstance(out, np.ndarray) and out.shape == etas.shape
    assert out[0] == 0.0 and out[-1] == 1.0
    assert fawzi_bound(2.0 * 2.0, 2.0) == pytest.approx(1 - math.sqrt(math.pi / 2) * math.exp(-2))
    assert fawzi_bound(torch.tensor([1.0, 3.0]), 1.0).tolist() == pytest.approx(fawzi_bound([1.0, 3.0], 1.0))
    # the median bound: eq. (6) = 1/2 at η = L √(2 ln(2 √(π/2))) = L √(ln 2π)
    assert MEDIAN_FACTOR == pytest.approx(math.sqrt(2 * math.log(math.sqrt(math.pi / 2) * 2)))
    for L in (0.3, 1.0, 4.2):
        assert median_upper_bound(L) == pytest.approx(L * 1.3556831, rel=1e-6)
        assert fawzi_bound(median_upper_bound(L), L) == pytest.approx(0.5, abs=1e-12)


def test_bound_is_monotone():
    etas = np.linspace(0.0, 8.0, 2001)
    for L in (0.5, 1.0, 3.0):
        b = fawzi_bound(etas, L)
        assert np.all(np.diff(b) >= 0)
        assert np.all(np.diff(fawzi_bound_classwise(etas, L, class_probs=[0.5, 0.3, 0.2])) >= 0)
    # and decreasing in L: a smoother generator forces more points close to the boundary
    assert np.all(fawzi_bound(etas, 1.0) >= fawzi_bound(etas, 2.0))


def test_classwise_bound_by_hand():
    p = np.array([0.5, 0.3, 0.2])
    for eta, L in ((0.2, 1.0), (1.0, 0.5), (3.0, 2.0)):
        a = norm.ppf(1 - p)
        expected = float(np.sum(norm.cdf(a + eta / L) - norm.cdf(a)))
        assert fawzi_bound_classwise(eta, L, class_probs=p) == pytest.approx(expected, rel=1e-10)
    # 10 balanced classes: sum = 10 (Φ(a + t) - 0.9) = 1/2 at t = Φ^-1(0.95) - Φ^-1(0.9)
    uniform = np.full(10, 0.1)
    assert median_upper_bound_classwise(2.0, class_probs=uniform) == pytest.approx(
        2.0 * (norm.ppf(0.95) - norm.ppf(0.9)), rel=1e-8)
    # a one-class classifier is never moved: bound 0, median bound inf; unused classes add nothing
    assert fawzi_bound_classwise(5.0, 1.0, class_probs=[1.0, 0.0]) == 0.0
    assert median_upper_bound_classwise(1.0, class_probs=[1.0, 0.0]) == math.inf
    assert fawzi_bound_classwise(1.0, 1.0, class_probs=[0.5, 0.5, 0.0]) == pytest.approx(
        fawzi_bound_classwise(1.0, 1.0, class_probs=[0.5, 0.5]))
    # with every class at most 1/2, eq. (4) is at least eq. (6)
    rng = np.random.default_rng(0)
    etas = np.linspace(0, 5, 101)
    for _ in range(50):
        q = rng.dirichlet(np.ones(rng.integers(2, 11)))
        if q.max() <= 0.5:
            assert np.all(fawzi_bound_classwise(etas, 1.3, class_probs=q) >= fawzi_bound(etas, 1.3) - 1e-12)


@pytest.mark.parametrize("eta,L,match", [(-0.1, 1.0, "eta"), (float("nan"), 1.0, "NaN"), (1.0, 0.0, "L must"),
                                         (1.0, -2.0, "L must"), (1.0, float("inf"), "L must")])
def test_bound_bad_input(eta, L, match):
    with pytest.raises(ValueError, match=match):
        fawzi_bound(eta, L)
    with pytest.raises(ValueError, match=match):
        fawzi_bound_classwise(eta, L, class_probs=[0.5, 0.5])


def test_bound_bad_types_and_probs():
    with pytest.raises(TypeError, match="L must"):
        fawzi_bound(1.0, True)
    with pytest.raises(ValueError, match="sum to 1"):
        fawzi_bound_classwise(1.0, 1.0, class_probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="K >= 2"):
        fawzi_bound_classwise(1.0, 1.0, class_probs=[1.0])
    with pytest.raises(ValueError, match=">= 0"):
        fawzi_bound([0.5, -1.0], 1.0)


# -- the Lipschitz estimate -----------------------------------------------------------------------


def _affine(singular: list[float], out_dim: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = len(singular)
    u, _ = torch.linalg.qr(torch.randn(out_dim, d, generator=g))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    A = u @ torch.diag(torch.tensor(singular)) @ v.T  # (D, d) with the given singular values
    b = torch.randn(out_dim, generator=g)
    return A, (lambda zz: (zz @ A.T + b).view(zz.shape[0], 1, 4, 5))


def test_lipschitz_of_affine_generator_is_sigma_max():
    A, gen = _affine([3.0, 2.9, 1.0, 0.5])  # close top singular values: power iteration must converge
    sigma = float(torch.linalg.matrix_norm(A, ord=2))
    est = lipschitz_estimate(gen, latent_dim=4, samples=64, generator=torch.Generator().manual_seed(1))
    assert est.value == pytest.approx(sigma, rel=0.01)
    assert est.value <= sigma * (1 + 1e-4)  # a lower estimate: never above the true constant
    assert est.pair_ratio <= est.value and est.jacobian_norm <= est.value
    assert float(est) == est.value


def test_lipschitz_estimate_dominates_sampled_pairs(vae):
    state = torch.random.get_rng_state()
    before = snapshot(vae)
    est = lipschitz_estimate(vae.decoder, latent_dim=4, samples=128, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert_unchanged(vae, before)
    g = torch.Generator().manual_seed(99)  # pairs the estimate never saw
    z1 = torch.randn(2000, 4, generator=g)
    for z2 in (torch.randn(2000, 4, generator=g), z1 + 0.05 * torch.randn(2000, 4, generator=g)):
        with torch.no_grad():
            ratio = (vae.decode(z1) - vae.decode(z2)).flatten(1).norm(dim=1) / (z1 - z2).norm(dim=1)
        assert est.value >= float(ratio.max())
    # the ascent improves on (or matches) the best start point it began from
    flat = lipschitz_estimate(vae.decoder, latent_dim=4, samples=128, ascent_steps=0,
                              generator=torch.Generator().manual_seed(0))
    assert est.jacobian_norm >= flat.jacobian_norm


def test_lipschitz_bad_input(vae):
    with pytest.raises(ValueError, match="latent_dim"):
        lipschitz_estimate(vae.decoder, latent_dim=0)
    with pytest.raises(ValueError, match="latent codes"):
        lipschitz_estimate(vae.decoder, latent_dim=3)  # the decoder takes 4
    with pytest.raises(ValueError, match="samples"):
        lipschitz_estimate(vae.decoder, latent_dim=4, samples=0)


# -- minimal perturbations ------------------------------------------------------------------------


def test_latent_search_flips_and_is_tight(vae, cnn_model, z):
    before = snapshot(cnn_model)
    res = latent_search(cnn_model, vae.decoder, z, config=FAST)
    assert_unchanged(cnn_model, before)
    assert bool(res.found.all())
    with torch.no_grad():
        label = cnn_model(vae.decode(z)).argmax(1)
        flipped = cnn_model(vae.decode(z + res.r)).argmax(1) != label
        shrunk = cnn_model(vae.decode(z + 0.95 * res.r)).argmax(1) != label
    assert bool(flipped.all())
    assert float(shrunk.float().mean()) <= 0.1  # 0.95 r keeps the label on (almost) every point
    torch.testing.assert_close(res.cost, res.r.norm(dim=1))


def test_targeted_restarts_only_lower_the_result(vae, cnn_model, z):
    plain = latent_search(cnn_model, vae.decoder, z, config=LatentSearch(steps=30, refine_steps=4, targets=0))
    more = latent_search(cnn_model, vae.decoder, z, config=LatentSearch(steps=30, refine_steps=4, targets=2))
    assert bool((more.cost <= plain.cost).all())
    with torch.no_grad():
        label = cnn_model(vae.decode(z)).argmax(1)
        assert bool((cnn_model(vae.decode(z + more.r)).argmax(1) != label).all())


def test_input_metric_search_is_no_worse_in_its_own_metric(vae, mlp_model, z):
    lat = latent_search(mlp_model, vae.decoder, z, config=FAST, metric="latent")
    inp = latent_search(mlp_model, vae.decoder, z, config=FAST, metric="input")
    with torch.no_grad():
        x = vae.decode(z)
        d_lat = (vae.decode(z + lat.r) - x).flatten(1).norm(dim=1)
        label = mlp_model(x).argmax(1)
        assert bool((mlp_model(vae.decode(z + inp.r)).argmax(1) != label).all())
    torch.testing.assert_close(inp.cost, (vae.decode(z + inp.r) - x).flatten(1).norm(dim=1))
    # minimising the image distance directly wins on most points (median over points)
    assert float(inp.cost.median()) <= float(d_lat.median()) * 1.05


def test_r_unc_at_most_r_in_everywhere(vae, cnn_model, z):
    state = torch.random.get_rng_state()
    before = snapshot(cnn_model)
    res = measure_robustness(cnn_model, vae.decoder, z, name="cnn", search=FAST)
    assert_unchanged(cnn_model, before)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert bool(torch.isfinite(res.r_in).all()) and bool(torch.isfinite(res.r_unc).all())
    assert bool((res.r_unc <= res.r_in).all())
    assert bool((res.r_unc <= res.r_unc_attack).all())
    # the input-space attacks alone beat the in-distribution perturbation on most points
    assert res.attack_alone_le_r_in >= 0.8
    # r_in is the best label-changing generated image found, so at most the latent-minimal one's
    lat = latent_search(cnn_model, vae.decoder, z, config=FAST)
    with torch.no_grad():
        d_lat = (vae.decode(z + lat.r) - vae.decode(z)).flatten(1).norm(dim=1)
    assert bool((res.r_in <= d_lat * (1 + 1e-5)).all())
    torch.testing.assert_close(res.r_in_latent_minimal, d_lat)
    torch.testing.assert_close(res.latent, lat.cost)
    assert sum(res.class_probs) == pytest.approx(1.0)


def test_pgd_fallback_keeps_the_invariant(vae, mlp_model, z):
    res = measure_robustness(mlp_model, vae.decoder, z[:12], search=FAST, attacks={})
    assert bool((res.r_unc <= res.r_in).all())
    assert res.attack_alone_le_r_in >= 0.75  # PGD bisection finds smaller input-space perturbations
    assert "pgd_radius_search" in res.config["attacks"]


def test_bad_generator_input(vae, cnn_model, z):
    small = lambda zz: vae.decode(zz)[:, :, :7, :7]  # noqa: E731  (B, 1, 7, 7)
    with pytest.raises(ValueError, match="failed on generated inputs"):
        measure_robustness(cnn_model, small, z)
    with pytest.raises(ValueError, match=r"shape \(1, 7, 7\)"):
        measure_robustness(cnn_model, small, z, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="data have shape"):
        bounds_table({"cnn": cnn_model}, vae.decoder, latent_dim=4, n=4, input_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="outside the input box"):
        measure_robustness(cnn_model, lambda zz: 2 * vae.decode(zz), z)
    with pytest.raises(ValueError, match="latent_dim"):
        bounds_table({"cnn": cnn_model}, vae.decoder, latent_dim=0)
    with pytest.raises(ValueError, match="L must"):
        bounds_table({"cnn": cnn_model}, vae.decoder, latent_dim=4, n=4, lipschitz=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        bounds_table({}, vae.decoder, latent_dim=4)


# -- the table and the figure ---------------------------------------------------------------------


def test_table_rows_columns_and_values(table, digits, cnn_model):
    assert isinstance(table, BoundsTable)
    assert table.columns == [BOUND_COLUMN, "cnn", "mlp"]
    assert table.rows == ["Error rate (real test data)", "Robustness in the Z-space ‖r‖₂",
                          "In-distribution robustness r_in", "Unconstrained robustness r_unc"]
    assert table.bound("latent") == pytest.approx(MEDIAN_FACTOR)
    assert table.bound("r_in") == table.bound("r_unc") == pytest.approx(table.lipschitz * MEDIAN_FACTOR)
    with torch.no_grad():
        err = float((cnn_model(digits["x_test"]).argmax(1) != digits["y_test"]).float().mean())
    assert table.error_rates["cnn"] == pytest.approx(err)
    md = table.to_markdown()
    for label in (*table.rows, BOUND_COLUMN, "cnn", "mlp"):
        assert label in md
    body = [line for line in md.splitlines() if line.startswith("| In-distribution")][0]
    med = table.results["cnn"].stats("r_in")["median"]
    assert f"{med:.3g}" in body
    assert "≈" in table.to_markdown(relative=True)
    for res in table.results.values():
        assert bool((res.r_unc <= res.r_in).all())


def test_table_json_and_provenance(table):
    data = json.loads(table.to_json())
    assert set(data["summary"]) == {"cnn", "mlp"}
    assert data["summary"]["cnn"]["r_in"]["median"] == pytest.approx(table.results["cnn"].stats("r_in")["median"])
    assert len(data["per_point"]["mlp"]["r_in"]) == N
    prov = data["provenance"]
    for key in ("advlab", "torch", "code_revision", "seed", "n", "lipschitz"):
        assert key in prov
    assert prov["seed"] == 3 and prov["n"] == N


def test_table_json_roundtrip(table):
    back = BoundsTable.from_json(table.to_json())
    assert back.to_markdown() == table.to_markdown()
    assert back.lipschitz == table.lipschitz and back.error_rates == pytest.approx(table.error_rates)
    torch.testing.assert_close(back.results["cnn"].z, table.results["cnn"].z)
    assert torch.equal(back.results["mlp"].label, table.results["mlp"].label)


def test_cdf_and_bound_curve(table):
    etas, cdf = table.cdf("cnn")
    assert np.all(np.diff(cdf) >= 0) and cdf[0] == 0.0 and 0.0 <= cdf[-1] <= 1.0
    values = table.results["cnn"].r_in.double().numpy()
    eta = float(np.median(values))
    assert table.cdf("cnn", [eta])[1][0] == pytest.approx(np.mean(values <= eta))
    np.testing.assert_allclose(table.bound_curve(etas), fawzi_bound(etas, table.lipschitz))
    assert table.fraction_below_bound("cnn") == pytest.approx(
        float(np.mean(values <= table.bound("r_in"))))


def test_bound_cdf_figure(table, tmp_path):
    from matplotlib.figure import Figure

    from advlab.reports.bounds import bound_cdf_figure

    path = tmp_path / "cdf.png"
    fig = bound_cdf_figure(table, path=path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2
    left = fig.axes[0]
    labels = [line.get_label() for line in left.get_lines()]
    assert any(label.startswith("cnn") for label in labels) and any(label.startswith("mlp") for label in labels)
    bound_line = [line for line in left.get_lines() if line.get_label().startswith("Theorem 1, eq. (6)")][0]
    x, y = bound_line.get_data()
    np.testing.assert_allclose(y, fawzi_bound(np.asarray(x), table.lipschitz))
    classwise = [line for line in left.get_lines() if "eq. (4)" in line.get_label()][0]
    x, y = classwise.get_data()
    np.testing.assert_allclose(y, fawzi_bound_classwise(np.asarray(x), table.lipschitz,
                                                        class_probs=table.results["cnn"].class_probs))
    with pytest.raises(ValueError, match="no classifiers"):
        bound_cdf_figure(BoundsTable(lipschitz=1.0, results={}))
