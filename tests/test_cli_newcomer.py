"""#11 reproducers from a newcomer's first commands on the embedded default (digits)."""

from __future__ import annotations

import json

import pytest

from advlab.cli import main


def test_defend_runs_on_digits_whose_test_split_is_smaller_than_n(tmp_path, capsys):
    """``advlab defend --recipe pgd --data digits`` failed with "x_val and y_val are empty": the
    digits test split has 450 points and the validation slice started at --n 500."""
    out = tmp_path / "pgd"
    assert main(["defend", "--recipe", "pgd", "--data", "digits", "--epochs", "1", "--limit", "200",
                 "--steps", "2", "--eval-eps", "0.1", "--budget", "10", "--out", str(out),
                 "--no-progress"]) == 0
    assert "test split has 450 points" in capsys.readouterr().out
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["n"] == 450 and set(summary["models"]) == {"undefended", "defended"}


def test_train_refuses_an_existing_checkpoint_before_training(tmp_path, capsys):
    """``--out`` was checked only after the training, and the message named the Python keyword."""
    out = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    before = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr()
    assert "--overwrite" in err.err and "epoch" not in err.out + err.err   # refused before any epoch
    assert (out / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**70)])
def test_a_seed_out_of_range_is_an_argument_error(seed, tmp_path, capsys):
    """``--seed 2**70`` said "Overflow when unpacking long long" after loading the data."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "digits", "--seed", seed, "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "a seed must be between 0 and 2**63 - 1" in capsys.readouterr().err


def test_debug_works_after_the_subcommand_too(capsys):
    """``--debug`` was accepted only before the subcommand."""
    with pytest.raises(ValueError, match="unknown attack"):
        main(["attack", "--checkpoint", "nowhere", "--attack", "pgdd", "--eps", "0.1", "--out", "o",
              "--debug"])


def test_an_unknown_attack_gets_did_you_mean_in_the_cli_spelling(tmp_path, capsys):
    """The message listed ``apgdce`` where --help says ``apgd-ce``, and omitted uap and patch."""
    from advlab.attacks.registry import entry

    with pytest.raises(ValueError) as err:
        entry("apgd-cee")
    assert "did you mean apgd-ce" in str(err.value) and "apgdce" not in str(err.value)
    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["attack", "--checkpoint", str(ck), "--attack", "pgdd", "--eps", "0.1",
                 "--out", str(tmp_path / "a")]) == 2
    msg = capsys.readouterr().err
    assert "did you mean pgd" in msg and "uap, patch" in msg


def test_a_checkpoint_with_nan_weights_is_an_error_not_zero_accuracy(tmp_path, capsys):
    """``advlab evaluate`` on a checkpoint with NaN weights exited 0 reporting 0.0%."""
    from safetensors.torch import load_file, save_file

    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    weights = load_file(str(ck / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] * float("nan")
    save_file(weights, str(ck / "model.safetensors"))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--attacks", "pgd", "--eps", "0.1", "--n", "20",
                 "--out", str(tmp_path / "ev"), "--no-progress"]) == 2
    assert "NaN or Inf logits" in capsys.readouterr().err
    assert not (tmp_path / "ev" / "robust_accuracy.md").exists()


def test_a_diverged_training_saves_nothing_and_says_why(tmp_path, capsys):
    """``advlab train --lr 1e30`` saved a diverged model (every logit NaN) and printed an accuracy."""
    out = tmp_path / "big"
    assert main(["train", "--data", "digits", "--epochs", "1", "--lr", "1e30", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()


def test_a_checkpoint_used_with_another_dataset_says_so(tmp_path, capsys):
    """A checkpoint run on data of another shape said "mat1 and mat2 shapes cannot be multiplied"."""
    import numpy as np

    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(0)
    np.savez(other, x=rng.random((20, 1, 12, 12)).astype("float32"), y=np.arange(20) % 10)
    capsys.readouterr()
    assert main(["attack", "--checkpoint", str(ck), "--attack", "fgsm", "--eps", "0.1", "--data",
                 f"npz:{other}", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "takes inputs (1, 8, 8)" in err and "(1, 12, 12)" in err and "mat1" not in err


def test_evaluate_writes_a_gallery_into_its_page(tmp_path):
    """#11: ``advlab evaluate`` made no gallery."""
    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(ck), "--attacks", "fgsm,pgd", "--eps", "0.05,0.1,0.2",
                 "--n", "30", "--out", str(out), "--no-progress"]) == 0
    assert (out / "gallery.png").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert 'src="gallery.png"' in page and "Adversarial examples" in page


def test_a_query_attack_shows_its_queries_as_they_are_answered(tmp_path, capsys):
    """#11: ``advlab attack`` with Square or HSJ was silent for minutes."""
    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["attack", "--checkpoint", str(ck), "--attack", "square", "--eps", "0.1", "--budget", "50",
                 "--n", "10", "--out", str(tmp_path / "sq")]) == 0
    err = capsys.readouterr().err
    assert "square queries" in err and "AdvlabWarning" not in err
    assert main(["attack", "--checkpoint", str(ck), "--attack", "square", "--eps", "0.1", "--budget", "50",
                 "--n", "10", "--out", str(tmp_path / "sq2"), "--no-progress"]) == 0
    assert "square queries" not in capsys.readouterr().err


def test_demo_has_quick_and_data_options(tmp_path):
    """#11: no ``advlab demo --quick`` / ``--data``."""
    out = tmp_path / "rep"
    assert main(["demo", "--quick", "--data", "digits", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["rows"][0]["n"] == 200 and (out / "index.html").exists()
    assert results["provenance"]["train_epochs"] == 5   # digits: 5 epochs in a quick run


def test_every_command_runs_pgd_with_the_same_steps(tmp_path):
    """#11: PGD took 10 steps in attack/evaluate and 20 in the demo and audit."""
    from advlab.runs.evaluate import evaluation_attacks

    assert evaluation_attacks(["pgd"])["PGD"].steps == 20
    assert evaluation_attacks(["pgd"], steps=7)["PGD"].steps == 7
    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(ck), "--no-progress"]) == 0
    assert main(["attack", "--checkpoint", str(ck), "--attack", "pgd", "--eps", "0.1", "--n", "5",
                 "--out", str(tmp_path / "a")]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "steps=20" in json.dumps(metrics)
