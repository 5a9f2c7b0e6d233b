"""#11 reproducers, found by tests/test_fuzz_parsers.py: a cascade's per-point record is a file
on disk and was trusted once its identity matched. A record.json that is not UTF-8 raised
UnicodeDecodeError, one holding a list AttributeError (it is only for people: the metadata in
record.safetensors is what counts); metadata lacking a field raised KeyError, a record lacking a
tensor KeyError, short stage timings IndexError; a batch past the attack's last one made the
resumed run loop for ever; broken_by naming an attack that does not exist raised IndexError from
the result, and an input outside the threat model kept for a broken point was counted as broken."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab.attacks import FGSM, PGD
from advlab.evaluation.cascade import Cascade
from advlab.models import build_seeded

EPS = 0.1


class Stop(Exception):
    pass


def _run(directory: Path, callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """A two-stage cascade on 12 points the model classifies correctly (its own predictions)."""
    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    cascade = Cascade({"FGSM": FGSM(eps=EPS), "PGD": PGD(eps=EPS, steps=2)})
    return cascade.run(model, x, y, batch_size=4, progress=False, checkpoint_path=directory, callback=callback)


@pytest.fixture()
def record(tmp_path: Path) -> Path:
    """The record of a cascade stopped after its first batch (attack 1 of 2, batch 1 of 3)."""
    def stop(event: dict[str, Any]) -> None:
        raise Stop

    with pytest.raises(Stop):
        _run(tmp_path, callback=stop)
    return tmp_path


def _rewrite(directory: Path, edit: Callable[[dict[str, torch.Tensor], dict[str, Any]], None]) -> None:
    """Edit the record's tensors and metadata in place, keeping the file well-formed."""
    path = directory / "record.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["record"])
    tensors = load_file(str(path))
    edit(tensors, meta)
    save_file(tensors, str(path), metadata={"record": json.dumps(meta)})


@pytest.mark.parametrize("text", [b"\xfb\xff", b"[1, 2]", b"[" * 100_000])
def test_an_unreadable_record_json_is_only_warned_about(record, text, caplog):
    reference = _run(record.parent / "reference")
    (record / "record.json").write_bytes(text)
    result = _run(record)
    assert torch.equal(result.broken_by, reference.broken_by)
    assert "record.json" in caplog.text


def _move_broken_point_out(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    broken = (tensors["broken_by"] >= 0).nonzero()
    assert broken.numel(), "the first batch of FGSM breaks a point"
    tensors["x_adv"][broken[0, 0]] = 1.0 - tensors["x_adv"][broken[0, 0]]  # far outside eps = 0.1


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t, m: m.pop("stage"), "stage must be a whole number"),
    (lambda t, m: m.update(stage_seconds=[0.1]), "1 timings for a cascade of 2"),
    (lambda t, m: m.update(identity=[]), "identity is not an object"),
    (lambda t, m: t.pop("broken_by"), "it holds tensors"),
    (lambda t, m: t.update(correct=t["correct"][:5]), "its tensors have shapes"),
    (lambda t, m: t.update(num_grads=t["num_grads"].float()), "num_grads must be a vector of torch.int64"),
    (lambda t, m: t["broken_by"].__setitem__(0, 5), "broken_by names attacks that have not run"),
    (lambda t, m: t["broken_by"].__setitem__(slice(None), 1), "broken_by names attacks that have not run"),
    (_move_broken_point_out, "outside the threat model"),
    (lambda t, m: t["x_adv"].__setitem__((t["broken_by"] < 0).nonzero()[0, 0], 0.5), "not their clean inputs"),
], ids=["no-stage", "short-timings", "identity-list", "no-broken-by", "short-correct", "float-grads",
        "attack-5", "attack-not-run", "outside-threat", "unbroken-moved"])
def test_a_record_that_no_cascade_could_have_written_is_refused(record, edit, message):
    _rewrite(record, edit)
    with pytest.raises(ValueError, match=rf"cascade record in .*is corrupt: .*{message}"):
        _run(record)


def test_a_record_at_a_batch_past_the_last_is_refused_rather_than_looping(record):
    _rewrite(record, lambda t, m: m.update(batch=99))
    outcome: list[BaseException | None] = []

    def resume() -> None:
        try:
            _run(record)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=resume, daemon=True)  # before the fix it never returned
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "resuming a record at batch 99 did not return"
    assert isinstance(outcome[0], ValueError) and "at batch 99 of attack 1, which has 3" in str(outcome[0])
