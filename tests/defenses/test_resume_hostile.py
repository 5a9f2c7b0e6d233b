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
