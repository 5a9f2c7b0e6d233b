"""#12, part 1: the user's own model (``--model module:factory``, ``--weights``, ``--input-shape``,
``--bounds``, ``--mean/--std``, ``--classes``) and ``--device`` on every command that runs a model.
Loading a user's code is explicit; loading weights never runs code; a bad factory, weights that do
not fit, or a device that is not there is a one-line error naming the fix."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from advlab.cli import main
from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.models.user import UserModel, import_factory, resolve_device
from advlab.runs.evaluate import evaluation_attacks

FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def tiny(hidden=32):
        g = torch.Generator().manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        return net

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny()
        def forward(self, x):
            return self.body(x)

    def probabilities():
        return nn.Sequential(tiny(), nn.Softmax(dim=1))

    def not_a_module():
        return "a string"

    def broken():
        raise RuntimeError("the user's bug")

    NUMBER = 3
""")


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "mynets.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory):
    """The factory's model trained briefly on digits, saved as a safetensors state dict."""
    from advlab.models import fit

    folder = tmp_path_factory.mktemp("weights")
    (folder / "mynets.py").write_text(FACTORY)
    net = import_factory(f"{folder / 'mynets.py'}:tiny")()
    train = load_dataset("digits", split="train")
    fit(net, train.x, train.y, epochs=3, batch_size=64, lr=3e-3, seed=0, progress=False)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return folder / "mynets.py", path, net.eval()


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_a_user_model_from_a_file_equals_the_python_api(tmp_path, capsys, trained_weights):
    path, weights, net = trained_weights
    out = tmp_path / "ev"
    code, _, err = _run(capsys, "evaluate", "--model", f"{path}:tiny", "--weights", str(weights), "--data",
                        "digits", "--attacks", "fgsm,pgd", "--eps", "0.05,0.1", "--n", "120", "--out", str(out),
                        "--no-progress", "--device", "cpu")
    assert code == 0, err
    stored = json.loads((out / "results.json").read_text())
    test = load_dataset("digits", split="test").subset(120)
    ref = evaluate(net, test.x, test.y, attacks=evaluation_attacks(["fgsm", "pgd"], eps=0.1), eps=[0.05, 0.1],
                   batch_size=250, seed=0, progress=False)
    got = {(r["attack"], r["eps"]): (r["n_correct"], r["n_robust"]) for r in stored["rows"]}
    want = {(r.attack, r.eps): (r.n_correct, r.n_robust) for r in ref.rows}
    assert got == want and want[("PGD", 0.1)][0] > 60          # a trained model, the same numbers
    assert stored["provenance"]["checkpoint"] == f"{path}:tiny with weights {weights}"
    assert stored["provenance"]["device"] == "cpu"


def test_a_module_path_factory_with_normalisation_inside(tmp_path, capsys, factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    out = tmp_path / "ev"
    code, _, err = _run(capsys, "evaluate", "--model", "mynets:Net", "--data", "digits", "--mean", "0.3",
                        "--std", "0.4", "--attacks", "fgsm", "--eps", "0.1", "--n", "50", "--out", str(out),
                        "--no-progress")
    assert code == 0, err
    model, card = UserModel(factory="mynets:Net", mean=(0.3,), std=(0.4,)).load(input_shape=(1, 8, 8))
    from advlab.models.wrappers import Normalize

    assert isinstance(model, Normalize) and card.mean == (0.3,) and not model.training
    x = torch.rand(4, 1, 8, 8)
    raw = import_factory("mynets:Net")().eval()
    torch.testing.assert_close(model(x), raw((x - 0.3) / 0.4))
    sys.modules.pop("mynets", None)


def test_attack_measure_and_audit_take_a_user_model(tmp_path, capsys, trained_weights):
    path, weights, _ = trained_weights
    common = ["--model", f"{path}:tiny", "--weights", str(weights), "--data", "digits", "--n", "40"]
    code, _, err = _run(capsys, "attack", *common, "--attack", "pgd", "--eps", "0.1", "--out", str(tmp_path / "a"),
                        "--no-progress")
    assert code == 0, err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["checkpoint"].startswith(f"{path}:tiny") and metrics["success_rate_over_correct"] > 0
    code, _, err = _run(capsys, "attack", *common, "--attack", "square", "--eps", "0.1", "--budget", "50",
                        "--out", str(tmp_path / "sq"), "--no-progress")
    assert code == 0, err
    code, _, err = _run(capsys, "measure", *common, "--attacks", "deepfool", "--out", str(tmp_path / "m"),
                        "--no-progress")
    assert code == 0, err
    assert len(json.loads((tmp_path / "m" / "minimal.json").read_text())["correct"]) == 40
    code, _, err = _run(capsys, "audit", *common, "--eps", "0.1", "--out", str(tmp_path / "au"))
    assert code in (0, 1), err and (tmp_path / "au" / "audit.json").exists()


def test_bounds_reach_the_attacks(tmp_path, capsys, factory_file):
    """--bounds -1,1: the attacks may use the whole box (a point at 0 may move to -0.1)."""
    out = tmp_path / "a"
    code, _, err = _run(capsys, "attack", "--model", f"{factory_file}:tiny", "--data", "digits", "--n", "30",
                        "--bounds=-1,1", "--attack", "fgsm", "--eps", "0.1", "--out", str(out), "--no-progress")
    assert code == 0, err
    from safetensors.torch import load_file

    t = load_file(out / "adversarial.safetensors")
    assert float(t["x_adv"].min()) < 0.0 and float(t["x_adv"].min()) >= -1.0
    assert float((t["x_adv"] - t["x"]).abs().max()) <= 0.1 + 1e-6


def test_uap_and_patch_take_a_user_model_and_its_bounds(tmp_path, capsys, trained_weights):
    """Universal perturbations and patches run on a user's model too (they refused --model before),
    inside the box --bounds names."""
    from safetensors.torch import load_file

    path, weights, _ = trained_weights
    common = ["--model", f"{path}:tiny", "--weights", str(weights), "--data", "digits", "--n", "60",
              "--fit-n", "200", "--no-progress"]
    code, _, err = _run(capsys, "attack", *common, "--attack", "uap", "--eps", "0.2", "--passes", "2",
                        "--out", str(tmp_path / "u"))
    assert code == 0, err
    m = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert m["checkpoint"] == f"{path}:tiny with weights {weights}" and 0.0 <= m["fooling_rate_held_out"] <= 1.0
    v = load_file(tmp_path / "u" / "perturbation.safetensors")["perturbation"]
    assert float(v.abs().max()) <= 0.2 + 1e-6
    code, _, err = _run(capsys, "attack", *common, "--attack", "patch", "--target-class", "3",
                        "--bounds=-1,1", "--out", str(tmp_path / "p"))
    assert code == 0, err
    patch = load_file(tmp_path / "p" / "perturbation.safetensors")["patch"]
    assert float(patch.min()) >= -1.0 and float(patch.max()) <= 1.0
    assert float(patch.min()) < 0.0     # the patch may use the lower half of the user's box
    assert (tmp_path / "p" / "gallery.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("factory, message", [
    ("nosuchpackage_xyz.nets:tiny", "cannot import 'nosuchpackage_xyz.nets'"),
    ("{file}:nosuch", "has no 'nosuch'; callables there: Net, broken, not_a_module, probabilities, tiny"),
    ("{file}:NUMBER", "'NUMBER' is a int, not a callable"),
    ("{file}:not_a_module", "returned a str, not a torch.nn.Module"),
    ("{file}:broken", "raised RuntimeError: the user's bug"),
    ("{dir}/nofile.py:tiny", "no such file"),
    ("no-colon-here", "is 'module.path:callable' or 'file.py:callable'"),
])
def test_a_bad_factory_is_one_line_naming_the_problem(tmp_path, capsys, factory_file, factory, message):
    factory = factory.format(file=factory_file, dir=tmp_path)
    code, _, err = _run(capsys, "evaluate", "--model", factory, "--data", "digits", "--eps", "0.1", "--n", "10",
                        "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_weights_that_do_not_fit_name_the_keys_and_pickle_is_refused(tmp_path, capsys, factory_file):
    bad = tmp_path / "bad.safetensors"
    save_file({"1.weight": torch.zeros(16, 64), "extra": torch.zeros(1)}, str(bad))
    code, _, err = _run(capsys, "evaluate", "--model", f"{factory_file}:tiny", "--weights", str(bad), "--data",
                        "digits", "--eps", "0.1", "--out", str(tmp_path / "o"))
    assert code == 2 and "do not fit" in err and "missing ['1.bias'" in err and "unexpected ['extra']" in err
    assert "1.weight: file (16, 64) vs model (32, 64)" in err
    pickled = tmp_path / "w.pt"
    pickled.write_bytes(b"not even read")
    code, _, err = _run(capsys, "evaluate", "--model", f"{factory_file}:tiny", "--weights", str(pickled), "--data",
                        "digits", "--eps", "0.1", "--out", str(tmp_path / "o"))
    assert code == 2 and ".safetensors only (never pickle)" in err


@pytest.mark.parametrize("extra, message", [
    (["--classes", "7"], "returns 10 logits but --classes says 7"),
    (["--input-shape", "1,28,28"], "takes inputs (1, 28, 28) but the data has (1, 8, 8)"),
    (["--mean", "0.1,0.2", "--std", "0.3,0.3"], "mean and std need 1 values"),
    (["--mean", "0.1"], "give both mean and std"),
    (["--device", "cuda:3"], "--device cuda:3"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
])
def test_bad_model_settings_are_clear_errors(tmp_path, capsys, factory_file, extra, message):
    if extra[:2] == ["--device", "cuda:3"] and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    code, _, err = _run(capsys, "evaluate", "--model", f"{factory_file}:tiny", "--data", "digits", "--eps", "0.1",
                        "--n", "10", "--out", str(tmp_path / "o"), *extra)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_user_model_needs_data_and_model_options_need_a_user_model(tmp_path, capsys, factory_file):
    code, _, err = _run(capsys, "evaluate", "--model", f"{factory_file}:tiny", "--eps", "0.1", "--out",
                        str(tmp_path / "o"))
    assert code == 2 and "pass --data NAME" in err
    code, _, err = _run(capsys, "evaluate", "--checkpoint", "somewhere", "--mean", "0.5", "--std", "0.2",
                        "--eps", "0.1", "--out", str(tmp_path / "o"))
    assert code == 2 and "--mean, --std describe(s) your own --model" in err
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "a", "--model", "b:c", "--out", "o"])   # one or the other
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_model_returning_probabilities_is_flagged(tmp_path, capsys, factory_file):
    code, _, err = _run(capsys, "evaluate", "--model", f"{factory_file}:probabilities", "--data", "digits",
                        "--attacks", "fgsm", "--eps", "0.1", "--n", "20", "--out", str(tmp_path / "o"),
                        "--no-progress")
    assert "probabilit" in err.lower()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device.*use --device cpu or auto"):
            resolve_device("cuda")


def test_loading_a_user_model_changes_nothing_of_the_caller(factory_file):
    """The factory seeds its own generator; loading must not move the caller's RNG either way,
    nor leave the model in training mode."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model, card = UserModel(factory=f"{factory_file}:tiny").load(input_shape=(1, 8, 8))
    assert torch.equal(before, torch.random.get_rng_state())
    assert not model.training and card.num_classes == 10 and card.architecture == f"user:{factory_file}:tiny"
    assert isinstance(model, nn.Module)
