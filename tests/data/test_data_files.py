"""User datasets: .npz archives and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data import DatasetNotFoundError, load_dataset, load_image_folder, load_npz

RNG = np.random.default_rng(0)
U8_NHW = RNG.integers(0, 256, size=(5, 4, 6), dtype=np.uint8)
LABELS = np.array([0, 1, 2, 1, 0])


def _save(tmp_path: Path, name: str = "set.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------- npz


def test_npz_uint8_nhw_gets_a_channel_and_is_scaled(tmp_path: Path) -> None:
    ds = load_npz(_save(tmp_path, x=U8_NHW, y=LABELS))
    assert ds.x.shape == (5, 1, 4, 6) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x[:, 0], torch.from_numpy(U8_NHW).float() / 255)
    assert torch.equal(ds.y, torch.from_numpy(LABELS))
    assert ds.class_names == ("0", "1", "2") and ds.name == "set"
    assert ds.source.startswith("npz:") and str(tmp_path) in ds.source


def test_npz_nhwc_is_transposed(tmp_path: Path) -> None:
    nhwc = RNG.random((5, 4, 6, 3), dtype=np.float32)
    ds = load_npz(_save(tmp_path, x=nhwc, y=LABELS))
    assert ds.x.shape == (5, 3, 4, 6)
    assert float(ds.x[2, 1, 3, 5]) == float(nhwc[2, 3, 5, 1])
    assert torch.equal(ds.x, torch.from_numpy(nhwc).permute(0, 3, 1, 2))


@pytest.mark.parametrize("shape", [(5, 1, 4, 6), (5, 3, 4, 6), (5, 4, 6, 1)])
def test_npz_four_dimensional_layouts(tmp_path: Path, shape) -> None:
    x = RNG.random(shape).astype(np.float64)  # float64 is accepted and stored as float32
    ds = load_npz(_save(tmp_path, x=x, y=LABELS))
    channels = shape[1] if shape[1] in (1, 3) else shape[3]
    assert ds.input_shape == (channels, 4, 6)
    assert ds.x.dtype == torch.float32


def test_npz_alternative_keys_and_class_names(tmp_path: Path) -> None:
    path = _save(tmp_path, images=U8_NHW, labels=LABELS.astype(np.uint8),
                 class_names=np.array(["cat", "dog", "eel", "fox"]))
    ds = load_npz(path)
    assert ds.class_names == ("cat", "dog", "eel", "fox") and ds.num_classes == 4
    assert ds.y.dtype == torch.int64
    assert load_npz(path, class_names=["a", "b", "c"]).class_names == ("a", "b", "c")


def test_npz_keras_layout_honours_split(tmp_path: Path) -> None:
    path = _save(tmp_path, x_train=U8_NHW, y_train=LABELS, x_test=U8_NHW[:2], y_test=LABELS[:2])
    assert len(load_dataset(f"npz:{path}", split="train")) == 5
    assert len(load_dataset(f"npz:{path}", split="test")) == 2
    assert len(load_dataset(path, split="test")) == 2  # a Path works too
    with pytest.raises(ValueError, match=r"holds splits \['test', 'train'\], pass split="):
        load_npz(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": U8_NHW * 1.0, "y": LABELS}, r"\[0, 1\], found \[0, 2\d\d\]; rescale"),
        ({"x": -(U8_NHW / 255.0), "y": LABELS}, r"found \[-0\.\d+, -?0\]; rescale"),
        ({"x": np.full((5, 4, 6), np.nan), "y": LABELS}, "NaN"),
        ({"x": U8_NHW, "y": LABELS.astype(np.float32)}, "labels must be integers"),
        ({"x": U8_NHW, "y": LABELS[:, None]}, r"shape \(N,\)"),
        ({"x": U8_NHW, "y": -LABELS - 1}, ">= 0"),
        ({"x": U8_NHW.astype(np.int32), "y": LABELS}, "uint8 .* or float"),
        ({"x": U8_NHW[..., None, None], "y": LABELS}, r"got shape \(5, 4, 6, 1, 1\)"),
        ({"x": np.zeros((5, 4, 6, 5)), "y": LABELS}, "cannot tell the channel axis"),
        ({"x": U8_NHW, "y": LABELS[:4]}, "5 images but y has 4 labels"),
        ({"x": U8_NHW, "y": LABELS, "class_names": np.array(["a", "b"])}, r"labels must lie in \[0, 1\]"),
        ({"x": U8_NHW, "y": LABELS, "class_names": np.array([1, 2, 3])}, "string array"),
        ({"data": U8_NHW, "target": LABELS}, r"expected arrays 'x' and 'y'.*found \['data', 'target'\]"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_npz(_save(tmp_path, **arrays))


def test_npz_object_arrays_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, x=U8_NHW, y=LABELS, class_names=np.array(["a", 2, None], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_npz(path)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="npz file not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


# ----------------------------------------------------------------------------- image folder


def _png(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def _gray(h: int = 4, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w), dtype=np.uint8)


def test_folder_grayscale(tmp_path: Path) -> None:
    cat = [_png(tmp_path / "cat" / f"{i}.png", _gray()) for i in range(2)]
    dog = [_png(tmp_path / "dog" / f"{i}.PNG", _gray()) for i in range(3)]
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    _png(tmp_path / "dog" / ".hidden.png", _gray())
    _png(tmp_path / ".cache" / "x.png", _gray())
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ("cat", "dog")
    assert ds.x.shape == (5, 1, 4, 5)
    assert ds.y.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(ds.x[:, 0], torch.from_numpy(np.stack(cat + dog)).float() / 255)  # PNG is lossless
    assert ds.name == tmp_path.name and ds.source.startswith("folder:")


def test_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    gray = _png(tmp_path / "a" / "g.png", _gray())
    rgb = _png(tmp_path / "b" / "c.png", RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8))
    ds = load_image_folder(tmp_path)
    assert ds.x.shape == (2, 3, 4, 5)
    for c in range(3):
        assert torch.equal(ds.x[0, c], torch.from_numpy(gray).float() / 255)
    assert torch.equal(ds.x[1], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)

    forced = load_image_folder(tmp_path, grayscale=True)
    assert forced.x.shape == (2, 1, 4, 5)
    expected = np.array(Image.fromarray(rgb).convert("L"))
    assert torch.equal(forced.x[1, 0], torch.from_numpy(expected).float() / 255)


def test_folder_sizes_must_agree_unless_resized(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "small.png", _gray(4, 5))
    _png(tmp_path / "b" / "big.bmp", _gray(8, 10))
    with pytest.raises(ValueError, match=r"4x5 \(HxW\) but b/big.bmp is 8x10; pass size="):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, size=(6, 7))
    assert ds.x.shape == (2, 1, 6, 7)
    assert "resized to 6x7" in ds.source


def test_folder_with_train_and_test_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("x", "y"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", _gray())
    assert len(load_dataset(f"folder:{tmp_path}", split="train")) == 6
    ds = load_dataset(tmp_path, split="test")
    assert len(ds) == 2 and ds.class_names == ("x", "y")


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda p: None, ValueError, "no class folders found"),
        (lambda p: (p / "a").mkdir(), ValueError, r"class folder\(s\) \['a'\] hold no images"),
        (lambda p: (p / "a").mkdir() or (p / "a" / "x.png").write_bytes(b"garbage"), ValueError, "cannot read image"),
    ],
    ids=["empty", "empty-class", "corrupt"],
)
def test_folder_errors(tmp_path: Path, setup, error: type, message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    setup(root)
    with pytest.raises(error, match=message):
        load_image_folder(root)


def test_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="image folder not found"):
        load_dataset(f"folder:{tmp_path / 'absent'}")


# ----------------------------------------------------------------------------- npz: tables and signals


def test_npz_table_is_read_as_is_or_scaled_on_x_train(tmp_path: Path) -> None:
    table = RNG.random((5, 7), dtype=np.float32)
    ds = load_npz(_save(tmp_path, x=table, y=LABELS, feature_names=np.array([f"f{i}" for i in range(7)])))
    assert ds.kind == "table" and ds.input_shape == (7,) and torch.equal(ds.x, torch.from_numpy(table))
    assert ds.feature_names == tuple(f"f{i}" for i in range(7)) and ds.scaling is None
    raw_train = RNG.normal(size=(5, 7)) * 50
    raw_test = RNG.normal(size=(2, 7)) * 50
    path = _save(tmp_path, x_train=raw_train, y_train=LABELS, x_test=raw_test, y_test=LABELS[:2], name="s.npz")
    with pytest.raises(ValueError, match="or pass scale=True to min-max scale each feature"):
        load_npz(path, split="train")
    train, test = load_npz(path, split="train", scale=True), load_npz(path, split="test", scale=True)
    assert torch.equal(train.x.amin(0), torch.zeros(7)) and torch.equal(train.x.amax(0), torch.ones(7))
    assert test.scaling == train.scaling and "x_train" in test.scaling.fitted_on  # fitted on train, not test
    inside = (raw_test >= raw_train.min(0)) & (raw_test <= raw_train.max(0))
    assert np.allclose(test.scaling.to_original(test.x).numpy()[inside], raw_test[inside], atol=1e-4)


def test_npz_signals_need_the_layout_said(tmp_path: Path) -> None:
    series = RNG.random((5, 2, 9), dtype=np.float32)
    assert load_npz(_save(tmp_path, x=series, y=LABELS)).input_shape == (1, 2, 9)  # (N, H, W) images
    ds = load_npz(_save(tmp_path, x=series, y=LABELS, name="a.npz"), layout="signal")
    assert ds.kind == "signal" and ds.input_shape == (2, 9) and torch.equal(ds.x, torch.from_numpy(series))
    stored = load_npz(_save(tmp_path, x=series, y=LABELS, layout=np.array("signal"), name="b.npz"))
    assert stored.kind == "signal"
    with pytest.raises(ValueError, match=r"a signal must be \(N, C, T\), got shape \(5, 7\)"):
        load_npz(_save(tmp_path, x=series[:, 0, :7], y=LABELS, name="c.npz"), layout="signal")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_npz(_save(tmp_path, x=series, y=LABELS, name="d.npz"), layout="video")
    with pytest.raises(ValueError, match="scale=True is for tables and signals"):
        load_npz(_save(tmp_path, x=series, y=LABELS, name="e.npz"), scale=True)
