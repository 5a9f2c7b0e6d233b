"""Checkpoints in advlab.models.checkpoint: safetensors weights plus a JSON model card."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import struct
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import advlab
import advlab.models.checkpoint as checkpoint
from advlab.models import ModelCard, Normalize, build_seeded, code_revision, load, load_card, save

NAMES = ["mlp", "lenet5", "small-cnn", "small-resnet"]


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every pickle entry point (and torch.load/save) fail, so any use of them shows up."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle or torch.load/torch.save was used")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "dump"), (pickle, "dumps"),
                         (torch, "load"), (torch, "save")]:
        monkeypatch.setattr(module, name, forbidden)


def trained_like(name: str, in_shape: tuple[int, int, int]) -> torch.nn.Module:
    """A seeded model whose BatchNorm statistics moved away from their defaults."""
    model = build_seeded(name, in_shape=in_shape, num_classes=10, seed=3)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *in_shape))
    return model


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("normalized", [False, True])
def test_round_trip_gives_identical_logits(
    name: str, normalized: bool, tmp_path: Path, no_pickle: None
) -> None:
    in_shape = (3, 32, 32) if normalized else (1, 8, 8)
    model = trained_like(name, in_shape)
    if normalized:
        model = Normalize(model, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    model.eval()
    directory = save(model, tmp_path / "ckpt", card={"dataset": "test", "seed": 3})
    assert sorted(p.name for p in directory.iterdir()) == ["card.json", "model.safetensors"]

    loaded = load(directory)
    assert type(loaded) is type(model)
    assert not any(m.training for m in loaded.modules())
    x = torch.rand(8, *in_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    # The .safetensors path next to its card works too.
    with torch.no_grad():
        assert torch.equal(load(directory / "model.safetensors")(x), model(x))


def test_card_round_trips(tmp_path: Path) -> None:
    model = Normalize(build_seeded("lenet5", in_shape=(1, 28, 28), num_classes=3, seed=5), mean=0.2, std=0.35)
    card = ModelCard(
        architecture="lenet5",
        in_shape=(1, 28, 28),
        num_classes=3,
        mean=(0.2,),
        std=(0.35,),
        dataset="fashion-mnist",
        class_names=("T-shirt", "Trouser", "Pullover"),
        clean_accuracy=0.9137,
        seed=5,
        training={"epochs": 2, "lr": 0.001, "optimizer": "adam"},
        code_revision="0123456789abcdef0123456789abcdef01234567",
    )
    save(model, tmp_path / "c", card=card)
    assert load_card(tmp_path / "c") == card
    assert load_card(tmp_path / "c" / "card.json") == card
    assert load(tmp_path / "c").advlab_card == card
    raw = json.loads((tmp_path / "c" / "card.json").read_text())
    assert raw["clean_accuracy"] == 0.9137 and raw["seed"] == 5
    assert raw["code_revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert raw["mean"] == [0.2] and raw["std"] == [0.35]  # shortest float32 repr, not 0.2000000029...
    assert card.arch_kwargs == {"in_shape": (1, 28, 28), "num_classes": 3}
    assert card.normalization == {"mean": [0.2], "std": [0.35]}


def test_card_from_dict_is_completed_from_the_model(tmp_path: Path) -> None:
    model = Normalize(build_seeded("small-cnn", in_shape=(3, 32, 32), num_classes=10, seed=0),
                      mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    before = datetime.now().astimezone()
    save(model, tmp_path / "c", card={"clean_accuracy": 0.5, "seed": 9})
    card = load_card(tmp_path / "c")
    assert card.architecture == "small-cnn" and card.in_shape == (3, 32, 32) and card.num_classes == 10
    assert card.mean == (0.5, 0.4, 0.3) and card.std == (0.2, 0.2, 0.2)
    assert card.clean_accuracy == 0.5 and card.seed == 9
    assert card.advlab_version == advlab.__version__
    assert card.code_revision == code_revision()
    created = datetime.fromisoformat(card.created)
    assert created.utcoffset() == timedelta(0)
    assert abs(created - before) < timedelta(minutes=1)


def test_weights_file_is_plain_safetensors(tmp_path: Path) -> None:
    net = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=0)
    save(Normalize(net, mean=0.5, std=0.5), tmp_path / "c", card={})
    path = tmp_path / "c" / "model.safetensors"
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["architecture"] == "small-resnet"
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch zip
    state = load_file(str(path))
    # Inner architecture only: no Normalize buffers, no "model." prefix.
    assert set(state) == set(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(t.is_contiguous() for t in state.values())


def test_save_does_not_touch_the_model(tmp_path: Path) -> None:
    model = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save(model, tmp_path / "c", card={})
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    m1 = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=1)
    m2 = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=2)
    save(m1, tmp_path / "c", card={})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(m2, tmp_path / "c", card={})
    save(m2, tmp_path / "c", card={}, overwrite=True)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(load(tmp_path / "c")(x), m2.eval()(x))
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"architecture": "mlp"}, "card says architecture='mlp'"),
        ({"num_classes": 7}, "card says num_classes=7"),
        ({"mean": [0.1], "std": [0.3]}, "card says mean"),
        ({"accuracy": 0.9}, r"unknown fields \['accuracy'\]"),
        ({"clean_accuracy": 91.0}, r"clean_accuracy must be in \[0, 1\]"),
        ({"class_names": ["a", "b"]}, "2 class_names for 10 classes"),
        ({"training": {"f": object()}}, "JSON-serialisable"),
    ],
)
def test_save_rejects_cards_that_disagree_with_the_model(tmp_path: Path, card: dict, message: str) -> None:
    model = build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    with pytest.raises(ValueError, match=message):
        save(model, tmp_path / "c", card=card)
    assert not (tmp_path / "c" / "card.json").exists()


def test_save_rejects_unregistered_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not a registered architecture"):
        save(torch.nn.Linear(3, 2), tmp_path / "c", card={})


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_card(tmp_path / "nowhere")
    save(build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0), tmp_path / "c", card={})
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load(tmp_path / "c")
    assert load_card(tmp_path / "c").architecture == "mlp"  # the card alone is still readable
    (tmp_path / "c" / "card.json").unlink()
    with pytest.raises(FileNotFoundError, match="card.json is missing"):
        load_card(tmp_path / "c")


def _edit_card(directory: Path, **changes: object) -> None:
    path = directory / "card.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_unknown_architecture_and_corrupt_card(tmp_path: Path) -> None:
    save(build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0), tmp_path / "c", card={})
    _edit_card(tmp_path / "c", architecture="vit-huge")
    with pytest.raises(ValueError, match=r"unknown architecture 'vit-huge'; valid names: .*small-cnn"):
        load(tmp_path / "c")
    (tmp_path / "c" / "card.json").write_text('{"architecture": "mlp", ')
    with pytest.raises(ValueError, match="card.json is not valid JSON"):
        load(tmp_path / "c")
    (tmp_path / "c" / "card.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_card(tmp_path / "c")
    (tmp_path / "c" / "card.json").write_text('{"architecture": "mlp"}')
    with pytest.raises(ValueError, match=r"lacks required fields \['in_shape', 'num_classes'\]"):
        load(tmp_path / "c")


def test_mismatched_weights_name_the_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    save(build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0), directory, card={})
    _edit_card(directory, num_classes=5)
    with pytest.raises(ValueError, match=r"ckpt.*shape mismatches.*classifier\.3\.weight: checkpoint \(10, 128\) vs model \(5, 128\)"):
        load(directory)
    _edit_card(directory, num_classes=10, architecture="mlp")
    with pytest.raises(ValueError, match=r"missing keys .*unexpected keys"):
        load(directory)

    _edit_card(directory, architecture="small-cnn")
    state = load_file(str(directory / "model.safetensors"))
    del state["features.0.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['features\.0\.bias'\], unexpected keys \['extra\.weight'\]"):
        load(directory)
    (directory / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load(directory)


def test_model_card_is_frozen_and_validated() -> None:
    card = ModelCard(architecture="mlp", in_shape=[1, 8, 8], num_classes=10)  # type: ignore[arg-type]
    assert card.in_shape == (1, 8, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.seed = 1  # type: ignore[misc]
    assert hash(card) == hash(dataclasses.replace(card))
    with pytest.raises(ValueError, match="both mean and std"):
        ModelCard(architecture="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.5,))
    with pytest.raises(ValueError, match="std finite and > 0"):
        ModelCard(architecture="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match="format_version"):
        ModelCard.from_dict({**card.to_dict(), "format_version": 99})


def test_code_revision_never_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rev = code_revision()
    assert rev == "unknown" or re.fullmatch(r"[0-9a-f]{40}", rev)
    assert code_revision(source_dir=tmp_path / "does-not-exist") == "unknown"

    package = tmp_path / "src" / "advlab"
    package.mkdir(parents=True)
    sha = "0123456789abcdef0123456789abcdef01234567"

    def fake_git(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        out = str(tmp_path) if "--show-toplevel" in args else sha
        return subprocess.CompletedProcess(args, 0, stdout=out + "\n", stderr="")

    monkeypatch.setattr(checkpoint.subprocess, "run", fake_git)
    assert code_revision(source_dir=package) == sha
    # A repository that is not advlab's own (the package merely sits somewhere inside it).
    other = tmp_path / "site-packages" / "advlab"
    other.mkdir(parents=True)
    assert code_revision(source_dir=other) == "unknown"

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(checkpoint.subprocess, "run", no_git)
    assert code_revision(source_dir=package) == "unknown"
    assert ModelCard(architecture="mlp", in_shape=(1, 8, 8), num_classes=10).code_revision == "unknown"
