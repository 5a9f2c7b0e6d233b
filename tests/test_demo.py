"""The main job, shrunk: the demo on the digits set writes the whole report folder."""

from __future__ import annotations

import json

import pytest

import advlab.runs.jobs as jobs
from advlab.data import DatasetNotFoundError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return jobs.demo_job(out=out, data="digits", epochs=6, n=120, progress=False, quiet=True)


def test_demo_writes_the_report(demo):
    for key in ("table", "csv", "json", "plot", "gallery", "gallery_fgsm", "html"):
        assert demo.files[key].exists() and demo.files[key].stat().st_size > 100, key
    assert (demo.folder / "model" / "model.safetensors").exists()
    html = demo.files["html"].read_text()
    assert "accuracy_vs_eps.png" in html and "gallery_pgd_eps0.1.png" in html


def test_demo_covers_the_four_attacks_over_the_seed_eps_list(demo):
    rows = json.loads(demo.files["json"].read_text())["rows"]
    assert {r["attack"] for r in rows} == {"FGSM", "I-FGSM", "PGD", "MI-FGSM", "worst-case"}
    assert sorted({r["eps"] for r in rows}) == list(jobs.DEMO_EPS)
    # an ε of 0.5 in L∞ on [0, 1] images leaves nothing standing for PGD
    pgd = {r["eps"]: r["robust_accuracy"] for r in rows if r["attack"] == "PGD"}
    assert pgd[0.5] == 0.0 and pgd[0.01] > pgd[0.1]
    assert demo.clean_accuracy > 0.8


def test_demo_falls_back_to_digits_and_says_so(tmp_path, monkeypatch, capsys):
    def missing(name, **kwargs):
        if name == "fashion-mnist":
            raise DatasetNotFoundError("fashion-mnist not found")
        return real(name, **kwargs)

    import advlab.runs._common as common
    import advlab.runs.demo as demo

    real = common.load_dataset
    monkeypatch.setattr(common, "load_dataset", missing)
    monkeypatch.setattr(demo, "load_dataset", missing)
    monkeypatch.setattr(demo, "DEMO_EPS", (0.1, 0.5))
    out = jobs.demo_job(out=tmp_path, epochs=2, n=30, progress=False, quiet=False)
    assert out.dataset == "digits"
    assert "falling back" in capsys.readouterr().out
    assert "falling back" in out.files["html"].read_text()
