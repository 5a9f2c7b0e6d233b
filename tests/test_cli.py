"""The CLI end to end on the digits set: train, attack, evaluate, list, and its error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from advlab.cli import main
from advlab.models import load, load_card


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cnn"
    rc = main(["train", "--data", "digits", "--model", "small-cnn", "--epochs", "4", "--seed", "0",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_train_writes_a_loadable_checkpoint_with_its_card(checkpoint):
    card = load_card(checkpoint)
    assert card.dataset == "digits" and card.seed == 0 and card.clean_accuracy > 0.8
    assert card.training["epochs"] == 4
    model = load(checkpoint)
    assert not model.training


def test_attack_writes_examples_metrics_and_gallery(checkpoint, tmp_path):
    out = tmp_path / "pgd"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "pgd", "--eps", "0.2",
                 "--steps", "10", "--n", "60", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 60 and metrics["eps"] == 0.2 and metrics["norm"] == "linf"
    assert 0.5 < metrics["success_rate_over_correct"] <= 1.0
    assert metrics["robust_accuracy"] < metrics["clean_accuracy"]
    tensors = load_file(str(out / "adversarial.safetensors"))
    delta = (tensors["x_adv"] - tensors["x"]).abs().flatten(1).amax(1)
    assert delta.max() <= 0.2 + 1e-6
    assert (out / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_targeted_attack(checkpoint, tmp_path):
    out = tmp_path / "t"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "mifgsm", "--eps", "0.3",
                 "--steps", "20", "--targeted", "--n", "40", "--out", str(out)]) == 0
    tensors = load_file(str(out / "adversarial.safetensors"))
    hit = (tensors["pred_adv"] == tensors["target"]).float().mean()
    assert hit > 0.7
    assert json.loads((out / "metrics.json").read_text())["targeted"] is True


def test_evaluate_writes_table_plot_and_json(checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--attacks", "fgsm,pgd", "--eps",
                 "0.05,0.1,0.3", "--steps", "10", "--n", "100", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    names = {r["attack"] for r in data["rows"]}
    assert names == {"FGSM", "PGD", "worst-case"}
    pgd = [r["robust_accuracy"] for r in data["rows"] if r["attack"] == "PGD"]
    assert pgd == sorted(pgd, reverse=True) and pgd[-1] < pgd[0]
    assert "| PGD |" in (out / "robust_accuracy.md").read_text()
    for name in ("accuracy_vs_eps.png", "index.html", "robust_accuracy.csv"):
        assert (out / name).stat().st_size > 100


@pytest.mark.parametrize("argv,needle", [
    (["attack", "--checkpoint", "/nonexistent", "--eps", "0.1", "--out", "x"], "nonexistent"),
    (["train", "--data", "nosuchdata", "--out", "x"], "nosuchdata"),
    (["train", "--data", "digits", "--model", "vgg99", "--out", "{tmp}/m"], "vgg99"),
])
def test_errors_are_one_clear_line_not_a_traceback(argv, needle, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and needle in err and "Traceback" not in err


def test_negative_eps_is_a_clear_error(checkpoint, capsys, tmp_path):
    assert main(["attack", "--checkpoint", str(checkpoint), "--eps", "-0.1", "--out", str(tmp_path)]) == 2
    assert "eps must be" in capsys.readouterr().err


def test_unknown_attack_lists_the_choices(checkpoint, capsys, tmp_path):
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "deepfool9", "--eps", "0.1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pgd" in err and "mifgsm" in err


def test_decreasing_eps_is_rejected(checkpoint, capsys, tmp_path):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--eps", "0.2,0.1", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert "increasing" in capsys.readouterr().err


def test_list_and_help_run_as_a_program():
    out = subprocess.run([sys.executable, "-m", "advlab.cli", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "small-cnn" in out.stdout and "mifgsm" in out.stdout
    assert "hsj" in out.stdout and "uap, patch" in out.stdout and "trades" in out.stdout
    helptext = subprocess.run([sys.executable, "-m", "advlab.cli", "attack", "--help"],
                              capture_output=True, text=True).stdout
    assert "--eps" in helptext and "--targeted" in helptext


def test_bad_eps_list_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", "x", "--eps", "a,b", "--out", "y"])
    assert info.value.code == 2
    assert "comma-separated numbers" in capsys.readouterr().err


def test_audit_command_passes_a_standard_model(checkpoint, tmp_path, capsys):
    out = tmp_path / "audit"
    rc = main(["audit", "--checkpoint", str(checkpoint), "--eps", "0.1", "--steps", "5", "--n", "80",
               "--out", str(out)])
    data = json.loads((out / "audit.json").read_text())
    assert rc == (0 if data["passed"] else 1)
    assert len(data["checks"]) == 8
    assert "Gradient-masking audit" in capsys.readouterr().out


def test_geometry_command_writes_maps_gaas_and_cosine(checkpoint, tmp_path):
    out = tmp_path / "geo"
    assert main(["geometry", "--checkpoint", str(checkpoint), "--n-maps", "2", "--resolution", "9",
                 "--gaas-eps", "1", "--max-directions", "4", "--n-gaas", "20", "--n", "30", "--steps", "3",
                 "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "geometry.json").read_text())
    assert len(data["decision_maps"]) == 2 and "eps=1" in data["gaas"] and data["cosine"]
    for name in ("decision_maps.png", "gaas.png", "cosine.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_bounds_command_writes_the_table(checkpoint, tmp_path):
    out = tmp_path / "bounds"
    assert main(["bounds", "--checkpoint", f"cnn={checkpoint}", "--latent-dim", "4", "--vae-epochs", "2",
                 "--n", "8", "--lipschitz-samples", "16", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "bounds.json").read_text())
    assert "cnn" in json.dumps(data)
    assert (out / "bounds_cdf.png").read_bytes()[:4] == b"\x89PNG"
    assert "|" in (out / "bounds.md").read_text()


def test_bounds_command_theorem_2(checkpoint, tmp_path):
    out = tmp_path / "bounds2"
    assert main(["bounds", "--checkpoint", f"cnn={checkpoint}", "--latent-dim", "4", "--vae-epochs", "2",
                 "--n", "6", "--lipschitz-samples", "16", "--projected", "2", "--query-budget", "50",
                 "--projection-steps", "20", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "bounds.json").read_text())
    assert data["theorem2"]["summary"]["cnn"]["n"] == 2 and "theorem3" not in data
    assert "Theorem 2" in (out / "bounds.md").read_text()


def test_bounds_transfer_needs_two_checkpoints(checkpoint, capsys, tmp_path):
    assert main(["bounds", "--checkpoint", f"cnn={checkpoint}", "--latent-dim", "4", "--vae-epochs", "1",
                 "--n", "4", "--transfer", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "two classifiers" in capsys.readouterr().err


def test_bounds_checkpoint_must_be_name_equals_dir(checkpoint, capsys, tmp_path):
    assert main(["bounds", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_evaluate_strong_adds_apgd_and_is_no_better_than_pgd(checkpoint, tmp_path):
    out = tmp_path / "strong"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--attacks", "pgd", "--strong", "--eps",
                 "0.05,0.1", "--steps", "10", "--n", "60", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    cascade = "APGD-CE → APGD-T"
    assert {r["attack"] for r in rows} == {"PGD", "APGD-CE", cascade, "worst-case"}
    acc = {(r["attack"], r["eps"]): r["robust_accuracy"] for r in rows}
    for e in (0.05, 0.1):
        assert acc[("worst-case", e)] <= min(acc[(a, e)] for a in ("PGD", "APGD-CE", cascade))
        assert acc[(cascade, e)] <= acc[("APGD-CE", e)]
        assert (out / "strong" / f"eps_{e:g}" / "record.json").exists()
    assert "APGD-T" in (out / "strong.md").read_text()
    # the same command again resumes from the per-point records and gives the same rows
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--attacks", "pgd", "--strong", "--eps",
                 "0.05,0.1", "--steps", "10", "--n", "60", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["attack"], r["eps"]): r["robust_accuracy"] for r in again} == acc


def test_measure_writes_distances_curve_and_distribution(checkpoint, tmp_path):
    out = tmp_path / "measure"
    assert main(["measure", "--checkpoint", str(checkpoint), "--attacks", "deepfool,fmn", "--norm", "l2",
                 "--eps", "0.25,0.5,1,2", "--steps", "30", "--n", "60", "--out", str(out),
                 "--no-progress"]) == 0
    from advlab.evaluation import MinimalNorms
    mn = MinimalNorms.from_json(str(out / "minimal.json"))
    assert mn.n == 60 and set(mn.attacks) == {"DeepFool", "FMN"}
    # the stored per-point best is the minimum over the two attacks
    assert torch.equal(mn.distances, torch.minimum(mn.by_attack["DeepFool"], mn.by_attack["FMN"]))
    assert mn.n_unbroken == 0 and mn.median(correct_only=True) > 0
    text = (out / "minimal.md").read_text()
    assert "best of all" in text and "| DeepFool |" in text
    # the tabulated robust accuracy is the fraction of points whose distance exceeds ε
    for e in (0.25, 0.5, 1.0, 2.0):
        assert mn.robust_accuracy(e) == pytest.approx(float((mn.distances > e).float().mean()))
    assert (out / "minimal_norms.png").stat().st_size > 10_000 and (out / "index.html").exists()


@pytest.mark.parametrize("argv, message", [
    (["measure", "--attacks", "pgd"], "not a minimal-perturbation attack"),
    (["measure", "--attacks", "cw", "--norm", "linf"], "C&W L2 here is an l2 attack; it cannot measure linf distances"),
    (["measure", "--eps", "0.5,0.25"], "strictly increasing"),
    (["evaluate", "--attacks", "deepfool"], "minimal-perturbation attack"),
])
def test_measure_and_evaluate_refuse_the_wrong_kind_of_attack(argv, message, checkpoint, tmp_path, capsys):
    assert main([*argv, "--checkpoint", str(checkpoint), "--n", "20", "--out", str(tmp_path / "x")]) != 0
    assert message in capsys.readouterr().err


def test_black_box_attack_records_queries_and_respects_the_budget(checkpoint, tmp_path):
    out = tmp_path / "square"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "square", "--eps", "0.2",
                 "--budget", "150", "--n", "40", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["access"] == "black-box: scores" and metrics["query_budget_per_point"] == 150
    assert 1 <= metrics["queries_mean"] <= 150 and metrics["success_rate_over_correct"] > 0.5
    assert metrics["grads"] == 0
    saved = load_file(str(out / "adversarial.safetensors"))
    assert (saved["x_adv"] - saved["x"]).abs().amax() <= 0.2 + 1e-6


def test_transfer_from_a_source_checkpoint(checkpoint, tmp_path):
    src = tmp_path / "src"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "4", "--seed", "1",
                 "--out", str(src), "--no-progress"]) == 0
    out = tmp_path / "transfer"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "mifgsm", "--eps", "0.2",
                 "--source", str(src), "--n", "60", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["access"] == "black-box: labels only" and metrics["queries_mean"] == 1.0
    assert metrics["transfer"]["source_white_box_success"] > metrics["success_rate_over_correct"] > 0.05


def test_minimal_attack_from_the_cli_takes_no_eps(checkpoint, tmp_path, capsys):
    out = tmp_path / "df"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "deepfool", "--n", "30",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eps"] is None and metrics["success_rate_over_correct"] == 1.0
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "deepfool", "--eps", "0.1",
                 "--out", str(out)]) != 0
    assert "takes no --eps" in capsys.readouterr().err
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "pgd", "--eps", "0.1",
                 "--queries", "10", "--out", str(out)]) != 0
    assert "--budget is for black-box attacks" in capsys.readouterr().err


def test_universal_perturbation_and_patch_from_the_cli(checkpoint, tmp_path):
    out = tmp_path / "uap"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "uap", "--eps", "0.25",
                 "--fit-n", "300", "--n", "200", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # held-out, not fitted on; must beat random noise of the same norm (digits CNN: ~0.4 vs ~0.15)
    assert m["fooling_rate_held_out"] > m["random_noise_fooling_rate_held_out"]["max"] + 0.05
    v = load_file(str(out / "perturbation.safetensors"))["perturbation"]
    assert v.abs().max() <= 0.25 + 1e-6 and (out / "gallery.png").exists()
    out = tmp_path / "patch"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "patch", "--target-class", "3",
                 "--patch-size", "0.25", "--fit-n", "300", "--n", "200", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["random_patch_success_held_out"] <= 1.0 and 0.0 <= m["success_held_out"] <= 1.0
    assert m["success_held_out"] > m["random_patch_success_held_out"]


def test_decision_based_attack_from_the_cli(checkpoint, tmp_path):
    out = tmp_path / "hsj"
    assert main(["attack", "--checkpoint", str(checkpoint), "--attack", "hsj", "--budget", "400",
                 "--n", "20", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["access"] == "black-box: labels only" and m["eps"] is None
    assert m["success_rate_over_correct"] == 1.0 and m["queries_mean"] <= 400
    assert 0 < m["median_norm_of_successes"] < 3.0
