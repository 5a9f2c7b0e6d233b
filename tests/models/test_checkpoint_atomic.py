"""Weights and card are one unit on disk: a crash at any moment of a save leaves the old pair or
the new pair loadable, never new weights beside an old card; files get ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from advlab.models import build_seeded, load, load_card, save


def _model(seed: int):
    return build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=seed)


def _weights(model) -> list[torch.Tensor]:
    return [v.detach().clone() for v in model.state_dict().values()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("crash_at", range(5))  # each os.replace of the save: 2 pending files, marker, 2 moves
def test_a_crash_anywhere_leaves_the_old_or_the_new_pair(tmp_path, monkeypatch, crash_at):
    old, new = _model(0), _model(1)
    save(old, tmp_path, card={"dataset": "digits", "seed": 0})
    real = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        if calls["n"] == crash_at:
            raise KeyboardInterrupt("killed (simulated)")
        calls["n"] += 1
        return real(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save(new, tmp_path, card={"dataset": "digits", "seed": 1}, overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    loaded, card = load(tmp_path), load_card(tmp_path)
    got = _weights(loaded)
    assert card.seed in (0, 1)
    assert _same(got, _weights(old if card.seed == 0 else new))  # the card describes these weights
    # the next save finishes or discards the interrupted one and leaves no stray files
    save(new, tmp_path, card={"dataset": "digits", "seed": 2}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "model.safetensors"]
    assert load_card(tmp_path).seed == 2 and _same(_weights(load(tmp_path)), _weights(new))


def test_a_crash_after_the_commit_reads_as_the_new_pair(tmp_path, monkeypatch):
    """Killed after the weights moved into place but before the card did: the old code's failure
    (new weights, old card, loaded silently) cannot happen."""
    old, new = _model(0), _model(1)
    save(old, tmp_path, card={"dataset": "digits", "seed": 0})
    real = os.replace
    moved = []

    def replace(src, dst):
        if str(dst).endswith("card.json") and moved:
            raise KeyboardInterrupt("killed between the two moves")
        if str(dst).endswith("model.safetensors"):
            moved.append(dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save(new, tmp_path, card={"dataset": "digits", "seed": 1}, overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    assert moved  # the weights did move
    assert load_card(tmp_path).seed == 1 and _same(_weights(load(tmp_path)), _weights(new))
    assert load_card(tmp_path / "card.json").seed == 1
    assert load_card(tmp_path / "model.safetensors").seed == 1


def test_checkpoint_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        save(_model(0), tmp_path, card={"dataset": "digits"})
    finally:
        os.umask(old)
    for name in ("model.safetensors", "card.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def _interrupted_first_save(directory, monkeypatch, *, committed: bool) -> None:
    """A first save killed after its pending files were written: with its marker written
    (committed) or before it."""
    real = os.replace

    def dying(src, dst):
        if (str(dst).endswith(".commit") and not committed) or str(dst).endswith(("card.json", "model.safetensors")):
            raise KeyboardInterrupt("killed (simulated)")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        save(_model(0), directory, card={"dataset": "digits", "seed": 0})
    monkeypatch.setattr(os, "replace", real)


@pytest.mark.parametrize("committed", [True, False])
def test_train_after_a_killed_save_finishes_it_or_starts_afresh_and_leaves_no_pending_files(
        tmp_path, monkeypatch, capsys, committed):
    """Found by the kill -9 soak of ``advlab train``: a save killed after its commit marker left
    only pending files; the next ``train`` saw no checkpoint, trained again, and a refusing rerun
    would have left the pending files for ever. Now a committed save counts as the checkpoint it
    is (refused before training, moved into place); an uncommitted one is discarded."""
    from advlab.cli import main

    out = tmp_path / "ck"
    _interrupted_first_save(out, monkeypatch, committed=committed)
    assert any(p.name.endswith(".pending") for p in out.iterdir())
    code = main(["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.safetensors"]
    if committed:
        assert code == 2 and "already holds a checkpoint" in err
        assert load_card(out).seed == 0 and _same(_weights(load(out)), _weights(_model(0)))
    else:
        assert code == 0 and load_card(out).dataset == "digits"
