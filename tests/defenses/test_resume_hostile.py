"""#11 reproducers: resuming a training checkpoint written for another architecture raised from
inside torch (``load_state_dict`` size mismatch); ``defend`` silently reused a baseline trained
with another architecture; a training state's tensor file name could point outside its folder."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.defenses import Standard
from advlab.defenses.training import STATE_FILE, train
from advlab.models import build_seeded


@pytest.fixture()
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)


def _small(arch: str = "small-cnn"):
    return build_seeded(arch, in_shape=(1, 8, 8), num_classes=10, seed=0)


def test_resuming_with_another_architecture_is_refused_by_name(data, tmp_path):
    x, y = data
    train(_small(), Standard(), x, y, epochs=1, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a model of another architecture"):
        train(_small("lenet5"), Standard(), x, y, epochs=2, checkpoint_dir=tmp_path, progress=False)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/dir.safetensors", "", 7])
def test_a_state_file_cannot_point_outside_its_folder(data, tmp_path, name):
    x, y = data
    train(_small(), Standard(), x, y, epochs=1, checkpoint_dir=tmp_path, progress=False)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    state["tensors"] = name
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="expected a file name inside its folder"):
        train(_small(), Standard(), x, y, epochs=2, checkpoint_dir=tmp_path, progress=False)


def test_defend_does_not_reuse_a_baseline_of_another_architecture(tmp_path, capsys):
    from advlab.cli import main

    common = ["defend", "--recipe", "fast", "--data", "digits", "--epochs", "1", "--limit", "100",
              "--n", "40", "--eval-eps", "0.1", "--budget", "5", "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(common + ["--model", "small-cnn"]) == 0
    capsys.readouterr()
    assert main(common + ["--model", "lenet5"]) == 2
    assert "holds a small-cnn model, not lenet5" in capsys.readouterr().err


# Found by tests/test_fuzz_parsers.py: the fields of state.json were used unchecked (a missing or
# null history raised KeyError/TypeError from train(), a recipe that is not an object
# AttributeError, an epoch [1] TypeError; an empty history resumed silently and lost the finished
# epochs, an epoch 1.5 became 1).


def _state_edit(tmp_path, **changes):
    state = json.loads((tmp_path / STATE_FILE).read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del state[key]
        else:
            state[key] = value
    (tmp_path / STATE_FILE).write_text(json.dumps(state))


_DELETE = object()


@pytest.mark.parametrize("changes", [{"history": []}, {"history": _DELETE}, {"history": None},
                                     {"recipe": "standard"}, {"epoch": [1]}, {"epoch": 1.5},
                                     {"history": [{"epoch": 2}]}, {"optimizer_scalars": {"x": {}}}],
                         ids=["empty-history", "no-history", "null-history", "recipe-string", "epoch-list",
                              "epoch-float", "wrong-epoch", "scalars-index"])
def test_a_state_file_with_malformed_fields_is_refused(data, tmp_path, changes):
    x, y = data
    train(_small("mlp"), Standard(), x, y, epochs=1, checkpoint_dir=tmp_path, progress=False)
    _state_edit(tmp_path, **changes)
    with pytest.raises(ValueError, match=r"training checkpoint .*state\.json is corrupt"):
        train(_small("mlp"), Standard(), x, y, epochs=2, checkpoint_dir=tmp_path, progress=False)


# Found by tests/test_fuzz_parsers.py: the tensors were only checked to be the file state.json
# names (its SHA-256, which a hostile writer recomputes), not to hold what resuming needs: a
# malformed header raised SafetensorError, a mis-shaped optimiser tensor a RuntimeError at the
# next step, a missing entry KeyError there, a missing generator state KeyError, a short one
# RuntimeError, an optimiser name "optim.x.exp_avg" int()'s ValueError, a float64 weight was
# silently cast.


def _tensors_edit(tmp_path, edit):
    """Rewrite the state's tensors with ``edit(dict)`` and the digest to match, as a hostile
    writer would."""
    import hashlib

    from safetensors.torch import load_file, save_file

    path = next(tmp_path.glob("state-epoch*.safetensors"))
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    _state_edit(tmp_path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _bad_header(tmp_path):
    import hashlib
    import struct

    path = next(tmp_path.glob("state-epoch*.safetensors"))
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 4
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    _state_edit(tmp_path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.update({"optim.0.exp_avg": t["optim.0.exp_avg"].flatten()}), "optimiser state 'exp_avg' of parameter 0"),
    (lambda t: t.update({"optim.x.exp_avg": t.pop("optim.0.exp_avg")}), "optimiser state for parameter 'x'"),
    (lambda t: t.update({"optim.99.step": t["optim.0.step"].clone()}), "parameter '99'"),
    (lambda t: t.pop("optim.1.exp_avg_sq"), "optimiser state of parameter 1 has"),
    (lambda t: t.pop("generator"), "lacks a random generator state"),
    (lambda t: t.update({"generator": t["generator"][:100]}), "lacks a random generator state"),
    (lambda t: t.update({"model.net.1.weight": t["model.net.1.weight"].double()}), "another architecture"),
], ids=["exp-avg-shape", "bad-index", "index-out-of-range", "missing-entry", "no-generator", "short-generator",
        "model-dtype"])
def test_state_tensors_that_do_not_fit_are_refused_before_training(data, tmp_path, edit, message):
    x, y = data
    train(_small("mlp"), Standard(), x, y, epochs=1, checkpoint_dir=tmp_path, progress=False)
    _tensors_edit(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        train(_small("mlp"), Standard(), x, y, epochs=2, checkpoint_dir=tmp_path, progress=False)


def test_a_state_tensors_file_with_a_bad_header_is_a_value_error(data, tmp_path):
    x, y = data
    train(_small("mlp"), Standard(), x, y, epochs=1, checkpoint_dir=tmp_path, progress=False)
    _bad_header(tmp_path)
    with pytest.raises(ValueError, match=r"state-epoch0001\.safetensors is not a readable safetensors file"):
        train(_small("mlp"), Standard(), x, y, epochs=2, checkpoint_dir=tmp_path, progress=False)
