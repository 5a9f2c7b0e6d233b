"""#14 item 6: fooling images (Nguyen et al. 2015) and how often plain noise is already classified
with high confidence."""

from __future__ import annotations

import pytest
import torch

from _helpers import assert_unchanged, snapshot
from advlab.evaluation import fooling_images, noise_confidence
from advlab.reports import fooling_gallery


def test_noise_is_pushed_to_every_class_until_the_model_is_sure(cnn_model, tmp_path):
    before, rng = snapshot(cnn_model), torch.get_rng_state()
    r = fooling_images(cnn_model, input_shape=(1, 8, 8), per_class=3, level=0.95, steps=200)
    assert_unchanged(cnn_model, before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert r.x.shape == (30, 1, 8, 8) and r.target.tolist() == [c for c in range(10) for _ in range(3)]
    assert float(r.x.min()) >= 0.0 and float(r.x.max()) <= 1.0
    # (measured: every one of the 30 reached 0.95, a median of a few dozen steps)
    assert float(r.reached.float().mean()) >= 0.9
    with torch.no_grad():
        p = torch.softmax(cnn_model(r.x), dim=1).gather(1, r.target[:, None]).squeeze(1)
    torch.testing.assert_close(p, r.confidence)
    assert bool((r.confidence[r.reached] >= 0.95).all())
    assert sum(r.rate_per_class()) / 10 == pytest.approx(float(r.reached.float().mean()))
    again = fooling_images(cnn_model, input_shape=(1, 8, 8), per_class=3, level=0.95, steps=200)
    assert torch.equal(again.x, r.x)
    g = fooling_gallery(r, path=tmp_path / "fooling.png")
    assert g is not None and (tmp_path / "fooling.png").read_bytes()[:4] == b"\x89PNG"
    gauss = fooling_images(cnn_model, input_shape=(1, 8, 8), per_class=1, level=0.9, start="gaussian",
                           classes=[3, 7])
    assert gauss.target.tolist() == [3, 7] and float(gauss.start.min()) >= 0.0


def test_noise_confidence_counts_what_the_model_says_about_plain_noise(cnn_model):
    nc = noise_confidence(cnn_model, input_shape=(1, 8, 8), n=300, level=0.9, seed=1)
    g = torch.Generator().manual_seed(1)
    x = torch.empty(300, 1, 8, 8).uniform_(0.0, 1.0, generator=g)
    with torch.no_grad():
        top = torch.softmax(cnn_model(x), dim=1).max(1).values
    assert nc.rate == pytest.approx(float((top >= 0.9).float().mean()))
    assert sum(nc.per_class) == round(300 * nc.rate)
    assert noise_confidence(cnn_model, input_shape=(1, 8, 8), n=50, level=0.5).rate >= \
        noise_confidence(cnn_model, input_shape=(1, 8, 8), n=50, level=0.99).rate


@pytest.mark.parametrize("kwargs, match", [
    ({"level": 1.0}, "strictly between 0 and 1"), ({"level": 0.0}, "strictly between"),
    ({"start": "pink"}, "unknown start"), ({"per_class": 0}, "per_class"),
    ({"input_shape": ()}, "input_shape"),
])
def test_bad_input_is_a_clear_error(cnn_model, kwargs, match):
    args = {"input_shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        fooling_images(cnn_model, **args)


def test_advlab_fooling_writes_galleries_and_the_noise_rate(tmp_path):
    import json

    from advlab.cli import main

    ckpt = tmp_path / "cnn"
    assert main(["train", "--data", "digits", "--model", "small-cnn", "--epochs", "3", "--out", str(ckpt),
                 "--no-progress"]) == 0
    out = tmp_path / "fool"
    # (a 3-epoch CNN is unsure even of real digits: its top probability stays below 0.5)
    assert main(["fooling", "--checkpoint", str(ckpt), "--level", "0.3", "--per-class", "2", "--steps", "100",
                 "--noise-n", "200", "--out", str(out)]) == 0
    s = json.loads((out / "fooling.json").read_text())
    assert set(s["starts"]) == {"uniform", "gaussian"}
    for start in ("uniform", "gaussian"):
        assert 0.0 <= s["starts"][start]["noise_rate"] <= 1.0 and s["starts"][start]["n"] == 20
        assert (out / f"fooling_{start}.png").read_bytes()[:4] == b"\x89PNG"
    assert s["starts"]["uniform"]["reached"] >= 0.5
    assert main(["fooling", "--checkpoint", str(ckpt), "--level", "1.5", "--out", str(tmp_path / "bad")]) != 0
