"""#11 reproducers: a checkpoint's card is untrusted input. A card claiming ``in_shape``
[1, 1e6, 1e6] allocated the architecture before the weights were checked (torch then raised
from inside), ``in_shape`` 8.7 became 8, and ``load()`` advanced the global torch RNG."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from advlab.models import build_seeded, load, save


@pytest.fixture()
def checkpoint(tmp_path):
    model = build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    return save(model, tmp_path / "ck", card={"dataset": "digits"})


def _with_card(checkpoint, tmp_path, **changes):
    evil = tmp_path / "evil"
    shutil.copytree(checkpoint, evil)
    card = json.loads((evil / "card.json").read_text())
    card.update(changes)
    (evil / "card.json").write_text(json.dumps(card))
    return evil


def test_a_card_claiming_a_huge_input_is_refused_before_anything_is_allocated(checkpoint, tmp_path):
    evil = _with_card(checkpoint, tmp_path, in_shape=[1, 1_000_000, 1_000_000])
    with pytest.raises(ValueError, match="does not fit architecture 'small-cnn'.*shape mismatches"):
        load(evil)


@pytest.mark.parametrize("in_shape", [[1, 8.7, 8], [1, "8", 8], [1, True, 8], "188"])
def test_in_shape_must_be_integers(checkpoint, tmp_path, in_shape):
    with pytest.raises(ValueError, match="in_shape must be one to three"):
        load(_with_card(checkpoint, tmp_path, in_shape=in_shape))


def test_loading_leaves_the_global_rng_alone_and_the_weights_exact(checkpoint):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    model = load(checkpoint)
    assert torch.equal(torch.rand(4), expected)
    reference = build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_card_with_an_integer_of_5000_digits_is_an_error_naming_the_card(checkpoint, tmp_path):
    # found by tests/test_fuzz_parsers.py: json.loads raised Python's own ValueError ("Exceeds the
    # limit (4300 digits) for integer string conversion"), which named neither the file nor the field
    from advlab.models import load_card

    evil = tmp_path / "evil"
    shutil.copytree(checkpoint, evil)
    text = (evil / "card.json").read_text()
    (evil / "card.json").write_text(text.replace('"num_classes": 10', '"num_classes": ' + "9" * 5000))
    for read in (load_card, load):
        with pytest.raises(ValueError, match=r"checkpoint card .*card\.json is not valid JSON"):
            read(evil)


def _rewrite_weights(path, edit):
    from safetensors.torch import load_file, save_file

    weights = path / "model.safetensors"
    tensors = load_file(str(weights))
    edit(tensors)
    save_file(tensors, str(weights))


def test_weights_of_another_kind_of_dtype_are_refused_not_cast(checkpoint, tmp_path):
    # found by tests/test_fuzz_parsers.py: only shapes were compared, so a weight stored as int32
    # (the same bytes: the float bits read as integers) was cast by load_state_dict to floats
    # around 1e9 and the model loaded without a word
    evil = tmp_path / "evil"
    shutil.copytree(checkpoint, evil)
    _rewrite_weights(evil, lambda t: t.update({k: v.view(torch.int32) for k, v in t.items() if k.endswith("weight")}))
    with pytest.raises(ValueError, match=r"does not fit architecture 'small-cnn': dtype mismatches \[.*torch\.int32 vs model torch\.float32"):
        load(evil)


def test_float_weights_of_another_precision_still_load(checkpoint, tmp_path):
    other = tmp_path / "f64"
    shutil.copytree(checkpoint, other)
    _rewrite_weights(other, lambda t: t.update({k: v.double() for k, v in t.items() if v.is_floating_point()}))
    reference = load(checkpoint)
    for (k, a), (_, b) in zip(load(other).state_dict().items(), reference.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k


def test_a_commit_marker_that_is_not_utf8_is_an_error_naming_it(checkpoint, tmp_path):
    # found by tests/test_fuzz_parsers.py: load() raised UnicodeDecodeError, naming no file
    evil = tmp_path / "evil"
    shutil.copytree(checkpoint, evil)
    (evil / ".commit").write_bytes(b"\x80\xff")
    with pytest.raises(ValueError, match=r"evil/\.commit is not a commit marker"):
        load(evil)


def test_a_commit_marker_cannot_move_files_out_of_its_folder(checkpoint, tmp_path):
    # found while fuzzing commit markers (tests/test_fuzz_parsers.py): recovery moved
    # ".<name>.pending" onto "<name>" for every name the marker lists, so "../../outside.txt"
    # (with "...", "outside.txt.pending" planted in the folder) made save(overwrite=True) write
    # a file two levels above the checkpoint
    evil = tmp_path / "a" / "evil"
    shutil.copytree(checkpoint, evil)
    (evil / ".commit").write_text("../../outside.txt\n")
    (evil / "...").mkdir()
    (evil / "outside.txt.pending").write_text("planted")
    model = build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    with pytest.raises(ValueError, match=r"\.commit names \['\.\./\.\./outside\.txt'\], which are not files of its folder"):
        save(model, evil, card={}, overwrite=True)
    with pytest.raises(ValueError, match="not files of its folder"):
        load(evil)
    assert not (tmp_path / "outside.txt").exists()
