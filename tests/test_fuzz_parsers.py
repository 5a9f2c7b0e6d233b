"""#11: fuzz the parsers of untrusted files (model cards and weights, npz archives, image folders,
IDX files, training states, cascade records, VAE files).

Each parser starts from a real file written by advlab's own writer, which hypothesis mutates (byte
flips, truncation, insertion, chunk duplication; structured edits of JSON, npy, PNG, IDX and
safetensors headers). Allowed outcomes: a result that passes a sanity check, or a ``ValueError``
(or ``FileNotFoundError``) whose message names the file: what the CLI reports as a one-line error.
Anything else leaking out is a bug. While parsing, the address space is capped
(``RLIMIT_AS``: a hostile header claiming terabytes fails to allocate and the test sees a
``MemoryError``) and the resident peak (``VmHWM``, reset through ``/proc/self/clear_refs``) may grow
by at most ``64 MiB + 100 x`` the input's size. ``pickle`` and ``torch.load`` raise while the
parsers run: no file may execute code.

Budgets follow the hypothesis profile of ``tests/conftest.py`` ("ci" by default), scaled down per
parser by :func:`_budget`. The hand-written reproducers at the end are the inputs the fuzzer found.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import hashlib
import io
import json
import math
import mmap
import pickle
import re
import resource
import shutil
import signal
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from advlab.data import load_dataset, read_idx, write_idx
from advlab.data.mnist import MNIST, load_idx_dataset
from advlab.models import build_seeded, load, load_card, save
from advlab.models.generative import VAE, load_vae, save_vae
from advlab.models.wrappers import Normalize

#: what a parser may raise for a bad file: what the CLI prints as one line (minus the types that
#: would be a bug here: a TypeError, KeyError or bare OSError from parsing a file)
ALLOWED = (ValueError, FileNotFoundError)

MiB = 2**20
RSS_SLACK = 64 * MiB  # resident peak growth allowed beyond 100 x the input's size
AS_SLACK = 64 * MiB  # address space allowed beyond 100 x the input's size (the same bound, unresident)


def _budget(fraction: float) -> settings:
    """``settings`` running ``fraction`` of the active profile's examples (at least 5)."""
    return settings(max_examples=max(5, int(settings.default.max_examples * fraction)))


# -- memory and code-execution guards --------------------------------------------------------------


def _status(key: str) -> int:
    """``/proc/self/status`` field ``key`` (``VmHWM``, ``VmSize``...) in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _can_reset_peak() -> bool:
    """Whether writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM`` here (Linux >= 4.0)."""
    try:
        junk = bytearray(128 * MiB)  # raise the peak well above the current size...
        del junk
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmHWM") < _status("VmRSS") + 64 * MiB  # ...and see it come back down
    except OSError:
        return False


CAN_RESET_PEAK = _can_reset_peak()


@contextlib.contextmanager
def bounded_memory(nbytes: int) -> Iterator[None]:
    """Run the block with the address space capped at its current size + ``AS_SLACK + 100 x
    nbytes``; afterwards check the resident peak grew by at most ``RSS_SLACK + 100 x nbytes``."""
    allowance = 100 * nbytes
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _status("VmSize") + AS_SLACK + allowance
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if CAN_RESET_PEAK:
        Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if CAN_RESET_PEAK:
        grown = _status("VmHWM") - before
        assert grown <= RSS_SLACK + allowance, (
            f"parsing {nbytes:,} bytes raised the resident peak by {grown / MiB:.0f} MiB")


def _no_code_from_files(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a parser unpickled something: files must never execute code")


class _NoUnpickler(pickle.Unpickler):
    """An ``Unpickler`` that cannot be made (a class, so that modules may still subclass it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _no_code_from_files()


@pytest.fixture(scope="module", autouse=True)
def no_pickle() -> Iterator[None]:
    """``pickle`` and ``torch.load`` raise for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pickle, "Unpickler", _NoUnpickler)
        for name in ("load", "loads"):
            mp.setattr(pickle, name, _no_code_from_files)
        mp.setattr(torch, "load", _no_code_from_files)
        mp.setattr(torch.serialization, "load", _no_code_from_files)
        yield


class ParserHang(Exception):
    """A parser ran for longer than :data:`HANG_SECONDS` on a tiny file."""


HANG_SECONDS = 30


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`ParserHang` in the block after ``seconds`` (the profiles set no deadline, and
    a loop that never ends would otherwise stall the suite)."""
    def alarm(signum: int, frame: Any) -> None:
        raise ParserHang(f"no result or error after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Torch on one thread for the module: the models here are tiny, and on a shared machine its
    spinning worker threads made each example some 25 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def attempt(call: Callable[[], Any], *, inputs: Sequence[Path], names: Sequence[Path]) -> Any | None:
    """Run the parser ``call`` under :func:`bounded_memory` (sized by the files ``inputs``) and
    :func:`no_hang`.

    Returns its result, or ``None`` when it raised one of :data:`ALLOWED` whose message names one of
    ``names``; any other exception propagates (and fails the test).
    """
    size = sum(p.stat().st_size for p in inputs if p.is_file())
    with bounded_memory(size), no_hang():
        try:
            return call()
        except ALLOWED as exc:
            message = str(exc)
            assert any(str(n) in message for n in names), (
                f"{type(exc).__name__} does not name the file: {message}")
            return None


def dir_size(directory: Path) -> list[Path]:
    """Every file under ``directory`` (what a parser of the directory may read)."""
    return [p for p in directory.rglob("*") if p.is_file()]


# -- mutations -------------------------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, *, head: int = 256) -> bytes:
    """``base`` after one to four byte-level edits: flips, overwrites, truncation, insertion,
    deletion, chunk duplication; positions favour the first ``head`` bytes (the headers)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        pos = draw(st.integers(0, min(n, head)) | st.integers(0, n))
        op = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "duplicate"]))
        if op == "flip" and pos < n:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            length = draw(st.integers(1, 128))
            chunk = bytes(data[pos:pos + length])
            at = draw(st.integers(0, len(data)))
            data[at:at] = chunk
    return bytes(data)


class Raw:
    """A JSON token written verbatim (e.g. an integer of 5,000 digits, which ``json.dumps``
    itself refuses to write)."""

    def __init__(self, text: str) -> None:
        self.text = text


SPECIAL_INTS = [0, 1, -1, 2, 3, 7, 8, 10, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1,
                2**63, 2**64, 10**30, -2**63, -2**31]
SPECIAL_FLOATS = [0.5, -0.0, 1.5, 1e308, -1e308, 1e-320, float("inf"), float("-inf"), float("nan"), 8.0]
SPECIAL_TEXT = ["", ".", "..", "../x", "/etc/passwd", "mlp", "F32", "float32", "uint8", "<f4", "∞", "\x00",
                "a" * 300]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(SPECIAL_INTS), st.integers(),
    st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_TEXT), st.text(max_size=12),
    st.sampled_from([Raw("9" * 5000), Raw("-" + "1" * 4400), Raw("1e999999"), Raw("0." + "0" * 5000 + "1")]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def dump_json(value: Any) -> str:
    """``json.dumps`` (NaN and infinities allowed) with :class:`Raw` tokens spliced in."""
    raws: list[str] = []

    def mark(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{i}\x00"), raw)
    return text


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (a tuple of keys and indices) to a node of a JSON value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, base: Any) -> Any:
    """``base`` after one to three structural edits: a node replaced by a JSON value of any type,
    a key or item deleted, an entry added, or a node wrapped in a list."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        new = draw(json_values)
        if not path:
            value = new if op in ("replace", "delete") else [value] if op == "wrap" else value
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "replace":
            parent[last] = new
        elif op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = [parent[last]]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=6))] = new
        elif isinstance(parent[last], list):
            parent[last].append(new)
        else:
            parent[last] = new
    return value


def json_file_variants(base: Any) -> st.SearchStrategy[bytes]:
    """Bytes of a JSON file: ``base`` edited structurally, or its text mutated byte-wise."""
    text = json.dumps(base, indent=1).encode()
    return st.one_of(mutated_json(base).map(lambda v: dump_json(v).encode()), mutated_bytes(text))


# safetensors: u64 little-endian header length, a JSON header, the tensor bytes.

def split_safetensors(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (a dict) and the data section of a safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


SAFETENSORS_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "F8_E4M3",
                      "float32", "F128", "", "C64"]
dims = st.sampled_from([0, 1, 2, 8, 10, 64, 2**31, 2**32 + 1, 2**62, 2**63 - 1, -1, 2**64]) | st.integers(0, 100)


@st.composite
def mutated_safetensors(draw: st.DrawFn, raw: bytes) -> bytes:
    """A safetensors file whose header was edited: a tensor's dtype, shape or data_offsets, the
    whole header as JSON, or the 8-byte length prefix; the data section may be cut or grown."""
    header, body = split_safetensors(raw)
    names = sorted(k for k in header if k != "__metadata__")
    kind = draw(st.sampled_from(["dtype", "shape", "offsets", "json", "prefix", "body",
                                 "reshape", "retype", "rename", "drop"]))
    if kind in ("reshape", "retype", "rename", "drop"):  # the file stays valid; what it holds does not fit
        name = draw(st.sampled_from(names))
        entry = header[name]
        if kind == "reshape":
            shape = entry["shape"]
            entry["shape"] = draw(st.sampled_from([[math.prod(shape)], shape[::-1], shape + [1], [1] + shape]))
        elif kind == "retype":
            entry["dtype"] = {"F32": "I32", "I32": "F32", "I64": "F64", "F64": "I64", "U8": "I8", "I8": "U8",
                              "BOOL": "U8"}.get(entry["dtype"], "U8")
        elif kind == "rename":
            header[draw(st.sampled_from([name + ".x", name.replace("0", "7"), "x" + name, name.split(".")[0]]))] = (
                header.pop(name))
        else:
            del header[name]
    elif kind in ("dtype", "shape", "offsets"):
        entry = header[draw(st.sampled_from(names))]
        if kind == "dtype":
            entry["dtype"] = draw(st.sampled_from(SAFETENSORS_DTYPES))
        elif kind == "shape":
            entry["shape"] = draw(st.lists(dims, max_size=5))
        else:
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = draw(st.sampled_from([[end, begin], [begin, end + 4], [begin, begin],
                                                          [0, len(body)], [begin, 2**63], [-4, end]])
                                         | st.lists(dims, min_size=2, max_size=2))
    elif kind == "json":
        header = draw(mutated_json(header))
    elif kind == "body":
        body = draw(mutated_bytes(body, head=len(body)))
    text = dump_json(header).encode()
    text += b" " * draw(st.integers(0, 7))  # the writer pads to 8 bytes; a reader must not care
    n = len(text)
    prefix = None
    if kind == "prefix":
        n = draw(st.sampled_from([0, 1, n - 1, n + 1, n + 8, len(text) + len(body), 2**31, 2**63, 2**64 - 1])
                 | st.integers(0, 2**64 - 1))
    prefix = struct.pack("<Q", n)
    return prefix + text + body


def safetensors_variants(raw: bytes) -> st.SearchStrategy[bytes]:
    """A safetensors file mutated structurally (header) or byte-wise."""
    return mutated_safetensors(raw) | mutated_bytes(raw)


def reset_dir(src: Path, dst: Path) -> Path:
    """``dst`` as a fresh copy of ``src``."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# -- model checkpoints: card.json + model.safetensors ----------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real zoo checkpoint: an ``mlp`` on 1x8x8 inputs, 10 classes, normalised."""
    inner = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    model = Normalize(inner, mean=(0.5,), std=(0.25,))
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save(model, path, card={"dataset": "digits", "clean_accuracy": 0.5, "seed": 0,
                            "class_names": [str(k) for k in range(10)], "training": {"epochs": 1}})
    load(path)  # warm up (imports, thread pools) outside the memory guard
    return path


def check_same_tensors(module: nn.Module, weights: Path) -> None:
    """``module`` holds the tensors of ``weights``, cast at most from one float precision to another."""
    from safetensors.torch import load_file

    state, stored = module.state_dict(), load_file(str(weights))
    assert set(state) == set(stored)
    for key, value in stored.items():
        ours = state[key]
        same_kind = ours.dtype == value.dtype or (ours.is_floating_point() and value.is_floating_point())
        assert same_kind and torch.equal(ours, value.to(ours.dtype)), key


def check_model(model: Any, weights: Path) -> None:
    """A loaded checkpoint: an eval-mode module holding the file's tensors (cast only from one
    float precision to another), whose card's shapes fit a forward pass."""
    assert isinstance(model, nn.Module) and not model.training
    check_same_tensors(model.model if isinstance(model, Normalize) else model, weights)
    card = model.advlab_card
    assert 1 <= len(card.in_shape) <= 3 and all(isinstance(d, int) and d >= 1 for d in card.in_shape)
    with torch.no_grad():
        out = model(torch.zeros(1, *card.in_shape))
    assert out.shape == (1, card.num_classes)


marker_names = st.sampled_from(["card.json", "model.safetensors", "../card.json", "/etc/passwd", ".", "..",
                                 "a\x00b", "", "sub/card.json"])


def plant_commit_marker(data: st.DataObject, work: Path) -> None:
    """Maybe leave what an interrupted group write leaves: a ``.commit`` marker (its names, or any
    bytes) and pending files, copies of the real ones or garbage."""
    if not data.draw(st.integers(0, 3)) == 0:
        return
    names = data.draw(st.lists(marker_names, max_size=3))
    text = "\n".join(names).encode("utf-8", "surrogatepass") + b"\n"
    (work / ".commit").write_bytes(data.draw(st.just(text) | st.binary(max_size=12)))
    for name in ("card.json", "model.safetensors"):
        if data.draw(st.booleans()):
            blob = data.draw(st.just((work / name).read_bytes()) | st.binary(max_size=16))
            (work / f".{name}.pending").write_bytes(blob)


@_budget(1.0)
@given(data=st.data())
def test_fuzz_card_json(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    work = reset_dir(checkpoint, tmp_path_factory.getbasetemp() / "fuzz-card")
    card_path = work / "card.json"
    card_path.write_bytes(data.draw(json_file_variants(json.loads(card_path.read_text()))))
    plant_commit_marker(data, work)
    card = attempt(lambda: load_card(work), inputs=dir_size(work), names=[work])
    if card is not None:
        assert 1 <= len(card.in_shape) <= 3 and min(card.in_shape) >= 1 and card.num_classes >= 2  # (D,), (C, T), (C, H, W)
    model = attempt(lambda: load(work), inputs=dir_size(work), names=[work])
    if model is not None:
        check_model(model, work / "model.safetensors")


@_budget(1.0)
@given(data=st.data())
def test_fuzz_model_weights(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory,
                            data: st.DataObject) -> None:
    work = reset_dir(checkpoint, tmp_path_factory.getbasetemp() / "fuzz-weights")
    weights = work / "model.safetensors"
    weights.write_bytes(data.draw(safetensors_variants(weights.read_bytes())))
    model = attempt(lambda: load(work), inputs=dir_size(work), names=[work])
    if model is not None:
        check_model(model, work / "model.safetensors")


# -- npz archives ----------------------------------------------------------------------------------

NPZ_MEMBERS = ("x", "y", "class_names")


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 10-point npz (uint8 images, int labels, three class names), stored and compressed."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (10, 1, 8, 8), dtype=np.uint8), "y": np.arange(10) % 3,
              "class_names": np.array(["zero", "one", "two"])}
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "stored.npz", **arrays)
    np.savez_compressed(folder / "deflated.npz", **arrays)
    load_dataset(f"npz:{folder / 'stored.npz'}")  # warm up outside the memory guard
    return {"stored": folder / "stored.npz", "deflated": folder / "deflated.npz"}


def check_dataset(ds: Any) -> None:
    """What every loader promises (:class:`advlab.data.Dataset`): finite float32 images in [0, 1]
    shaped (N, C, H, W), int64 labels (N,) naming a class."""
    assert ds.x.dtype == torch.float32 and ds.x.ndim == 4 and ds.x.shape[1] in (1, 3)
    assert ds.y.dtype == torch.int64 and ds.y.shape == (ds.x.shape[0],)
    if ds.x.numel():
        assert bool(torch.isfinite(ds.x).all()) and 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    if ds.y.numel():
        assert 0 <= int(ds.y.min()) and int(ds.y.max()) < len(ds.class_names)


NPY_DESCRS = ["<f4", "|u1", "<i8", ">i4", "|b1", "<f8", "<f2", "<U3", "|S2", "|O", "<c8", "|V8", "<M8[s]",
              [("a", "<f4")], "garbage", 7, "<u8", "<i2"]
npy_shapes = st.one_of(
    st.lists(dims, max_size=5).map(tuple),
    st.sampled_from([(10, 1, 8, 8), (10, 8, 8), (10,), (), (0, 1, 8, 8), (10, 8, 8, 1), (10, 8, 8, 3),
                     (-10, 1, 8, 8), (1_000_000, 1000, 1000), [10, 1, 8, 8], 10, None, "10"]),
)


@st.composite
def npy_header_edit(draw: st.DrawFn, member: bytes) -> bytes:
    """``member`` (a .npy file) with its header dict rewritten: descr, fortran_order, shape, the
    format version, or the header text itself; the payload may be cut or grown."""
    version = np.lib.format.read_magic(io.BytesIO(member))
    fh = io.BytesIO(member)
    np.lib.format.read_magic(fh)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(fh))
    payload = member[fh.tell():]
    header: dict[str, Any] = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                              "shape": shape}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["descr", "fortran_order", "shape", "delete", "extra"]))
        if key == "descr":
            header["descr"] = draw(st.sampled_from(NPY_DESCRS))
        elif key == "fortran_order":
            header["fortran_order"] = draw(st.sampled_from([True, False, 1, None, "yes"]))
        elif key == "shape":
            header["shape"] = draw(npy_shapes)
        elif key == "delete" and header:
            del header[draw(st.sampled_from(sorted(header)))]
        else:
            header[draw(st.text(max_size=5))] = draw(st.integers())
    text = repr(header) if draw(st.integers(0, 9)) else draw(st.text(max_size=40))
    major = draw(st.sampled_from([1, 1, 2, 3, 0, 9]))
    raw = (text + " " * draw(st.integers(0, 64)) + "\n").encode("utf-8")
    size = draw(st.sampled_from([len(raw)] * 6 + [0, len(raw) + 1, len(raw) - 1, 2**16 - 1, 2**32 - 1]))
    prefix = struct.pack("<H" if major == 1 else "<I", min(size, 2**16 - 1 if major == 1 else 2**32 - 1))
    if draw(st.booleans()):
        payload = draw(mutated_bytes(payload, head=len(payload)))
    return b"\x93NUMPY" + bytes([major, 0]) + prefix + raw + payload


def _with_shape(member: bytes, shape: tuple[int, ...]) -> bytes:
    """A .npy member of ``uint8`` claiming ``shape``, with ``member``'s payload."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + member[128:]


def _set_zip_sizes(raw: bytes, member: str, *, file_size: int | None, compress_size: int | None) -> bytes:
    """``raw`` (a zip) with ``member``'s sizes overwritten in its local and central headers."""
    data = bytearray(raw)
    name = member.encode()
    for sig, comp_at, size_at, name_at in ((b"PK\x03\x04", 18, 22, 30), (b"PK\x01\x02", 20, 24, 46)):
        at = data.find(sig)
        while at >= 0:
            if data[at + name_at:at + name_at + len(name)] == name:
                if compress_size is not None:
                    data[at + comp_at:at + comp_at + 4] = struct.pack("<I", compress_size)
                if file_size is not None:
                    data[at + size_at:at + size_at + 4] = struct.pack("<I", file_size)
            at = data.find(sig, at + 4)
    return bytes(data)


@st.composite
def npz_variants(draw: st.DrawFn, files: dict[str, Path]) -> bytes:
    """An npz: a real one mutated byte-wise, one with a member's npy header edited, or one whose
    zip headers lie about a member's sizes."""
    kind = draw(st.sampled_from(["stored", "deflated"]))
    raw = files[kind].read_bytes()
    how = draw(st.sampled_from(["bytes", "npy", "npy", "zip-sizes", "forged"]))
    if how == "bytes":
        return draw(mutated_bytes(raw, head=len(raw)))
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    target = draw(st.sampled_from([f"{k}.npy" for k in NPZ_MEMBERS]))
    if how == "npy" or draw(st.booleans()):
        members[target] = draw(npy_header_edit(members[target]))
    if how == "forged":  # a header claiming a large array, and a zip entry agreeing with it
        members[target] = _with_shape(members[target], draw(st.sampled_from(
            [(100_000, 1, 8, 8), (10**6, 1, 28, 28), (10, 1, 1000, 1000), (60_000,), (2**20, 3, 32, 32)])))
    out = io.BytesIO()
    compression = {"deflated": zipfile.ZIP_DEFLATED, "stored": zipfile.ZIP_STORED}[kind]
    if not draw(st.integers(0, 9)):  # what np.savez never writes, but zipfile reads
        compression = draw(st.sampled_from([zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    raw = out.getvalue()
    if how == "zip-sizes":
        big = st.sampled_from([0, 1, 100, 2**20, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
        raw = _set_zip_sizes(raw, target, file_size=draw(big | st.none()), compress_size=draw(big | st.none()))
    elif how == "forged":
        raw = _set_zip_sizes(raw, target, file_size=_npy_claim(members[target]), compress_size=None)
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated_bytes(raw, head=len(raw)))
    return raw


def _npy_claim(member: bytes) -> int | None:
    """The bytes a .npy member would take if its header told the truth (``None``: unreadable)."""
    try:
        fh = io.BytesIO(member)
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        size = fh.tell() + math.prod(shape) * dtype.itemsize
        return size if 0 <= size < 2**32 else None
    except (ValueError, EOFError):
        return None


@_budget(1.0)
@given(data=st.data())
def test_fuzz_npz(npz_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                  data: st.DataObject) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.npz"
    path.write_bytes(data.draw(npz_variants(npz_files)))
    ds = attempt(lambda: load_dataset(f"npz:{path}"), inputs=[path], names=[path])
    # either a clear error naming the file (checked in attempt) or a dataset keeping its promises
    assert ds is None or type(ds).__name__ == "Dataset", type(ds)
    if ds is not None:
        check_dataset(ds)


# -- the guard itself ------------------------------------------------------------------------------


def test_the_memory_guard_catches_a_huge_claim_and_a_large_resident_peak() -> None:
    with pytest.raises(MemoryError):
        with bounded_memory(100):
            np.empty(2**40, dtype=np.uint8)  # what a header claiming a terabyte would allocate
    if not CAN_RESET_PEAK:
        pytest.skip("/proc/self/clear_refs cannot reset VmHWM here")
    mapped = mmap.mmap(-1, 200 * MiB)  # address space taken before, made resident inside
    with pytest.raises(AssertionError, match="resident peak"):
        with bounded_memory(100):
            np.frombuffer(mapped, dtype=np.uint8)[:] = 1
    mapped.close()


def test_the_hang_guard_stops_a_loop() -> None:
    with pytest.raises(ParserHang):
        with no_hang(1):
            while True:
                pass


def test_no_parser_may_unpickle() -> None:
    with pytest.raises(AssertionError, match="never execute code"):
        pickle.loads(pickle.dumps(1))
    with pytest.raises(AssertionError, match="never execute code"):
        pickle.Unpickler(io.BytesIO(pickle.dumps(1))).load()
    with pytest.raises(AssertionError, match="never execute code"):
        torch.load(io.BytesIO())
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    buffer.seek(0)
    with pytest.raises(AssertionError, match="never execute code"):
        np.load(buffer, allow_pickle=True)


# -- image folders ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-class folder of 8x8 grayscale PNGs, two per class, plus one BMP and one JPEG (``c/``)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images") / "set"
    for cls in ("a", "b", "c"):
        (root / cls).mkdir(parents=True)
    for cls, stem in (("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / cls / f"{stem}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / "c" / "0.bmp")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / "c" / "1.jpg")
    lone = root.parent / "lone" / "a"  # one image: what its header claims is decoded, not compared
    lone.mkdir(parents=True)
    shutil.copy(root / "a" / "0.png", lone / "0.png")
    load_dataset(f"folder:{root}")  # warm up outside the memory guard
    return root


def png_chunks(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a well-formed PNG."""
    out, at = [], 8
    while at < len(raw):
        (n,) = struct.unpack(">I", raw[at:at + 4])
        out.append((raw[at + 4:at + 8], raw[at + 8:at + 8 + n]))
        at += 12 + n
    return out


def png_chunk(kind: bytes, data: bytes, *, crc: bool = True, length: int | None = None) -> bytes:
    """One PNG chunk, with its CRC right (or deliberately wrong) and its length field true (or
    ``length``)."""
    value = zlib.crc32(kind + data) ^ (0 if crc else 1)
    return struct.pack(">I", len(data) if length is None else length) + kind + data + struct.pack(">I", value)


png_sides = st.one_of(st.sampled_from([0, 1, 7, 8, 9, 64, 2000, 4096, 5000, 8000, 8192, 8193, 20_000, 2**31 - 1,
                                       2**32 - 1]), st.integers(0, 300), st.integers(0, 9000))


@st.composite
def png_header_edit(draw: st.DrawFn, raw: bytes) -> bytes:
    """A PNG whose IHDR was edited (size, bit depth, colour type, compression, filter, interlace),
    whose image data was replaced, cut or dropped, or which gained extra chunks."""
    chunks = png_chunks(raw)
    width, height, depth, colour, compression, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    lengths: dict[int, int] = {}
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(["width", "height", "both", "depth", "colour", "other", "idat", "chunk",
                                      "large", "length"]))
        if field == "length":  # a chunk claiming more bytes than the file has
            lengths[draw(st.integers(0, len(chunks) - 1))] = draw(
                st.sampled_from([2**31 - 1, 2**28, 2**24, 2**32 - 1]) | st.integers(0, 2**32 - 1))
        if field == "large":  # within MAX_PIXELS, in colour: hundreds of MB claimed by a few bytes
            width = height = draw(st.sampled_from([4096, 6000, 8192]))
            colour, depth = draw(st.sampled_from([2, 6])), draw(st.sampled_from([8, 16]))
        if field == "width":
            width = draw(png_sides)
        elif field == "height":
            height = draw(png_sides)
        elif field == "both":  # square, so that the pixels the header claims is all that limits it
            width = height = draw(png_sides)
        if field == "depth":
            depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
        elif field == "colour":
            colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
        elif field == "other":
            compression, filt, interlace = (draw(st.sampled_from([0, 1, 255])) for _ in range(3))
        elif field == "idat":
            body = draw(st.sampled_from(["zeros", "random", "cut", "none"]))
            rest = [c for c in chunks if c[0] != b"IDAT"]
            if body == "zeros":
                data = zlib.compress(b"\x00" * draw(st.integers(0, 70_000)))
            elif body == "random":
                data = zlib.compress(draw(st.binary(max_size=300)))
            else:
                idat = b"".join(d for k, d in chunks if k == b"IDAT")
                data = idat[:draw(st.integers(0, len(idat)))] if body == "cut" else None
            chunks = rest[:-1] + ([(b"IDAT", data)] if data is not None else []) + rest[-1:]
        elif field == "chunk":
            kind = draw(st.sampled_from([b"PLTE", b"tRNS", b"iCCP", b"zTXt", b"IHDR", b"IEND", b"acTL", b"fcTL",
                                         b"fdAT", b"sBIT", b"gAMA", b"pHYs"]))
            chunks.insert(draw(st.integers(1, len(chunks))), (kind, draw(st.binary(max_size=40))))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, compression, filt, interlace)
    chunks[0] = (b"IHDR", ihdr)
    good_crc = draw(st.integers(0, 9)) > 0
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(k, d, crc=good_crc or k != b"IHDR", length=lengths.get(i))
                                          for i, (k, d) in enumerate(chunks))


@_budget(1.0)
@given(data=st.data())
def test_fuzz_image_folder(image_folder: Path, tmp_path_factory: pytest.TempPathFactory,
                           data: st.DataObject) -> None:
    lone = data.draw(st.booleans())
    work = reset_dir(image_folder.parent / "lone" if lone else image_folder,
                     tmp_path_factory.getbasetemp() / "fuzz-images")
    victim = work / ("a/0.png" if lone else data.draw(st.sampled_from(["b/1.png", "a/0.png", "c/0.bmp", "c/1.jpg"])))
    raw = victim.read_bytes()
    edit = png_header_edit(raw) if victim.suffix == ".png" else st.nothing()
    victim.write_bytes(data.draw(edit | mutated_bytes(raw)))
    ds = attempt(lambda: load_dataset(f"folder:{work}"), inputs=dir_size(work), names=[work])
    if ds is not None:
        check_dataset(ds)
        if lone:
            assert ds.class_names == ("a",) and ds.y.tolist() == [0]
        else:
            assert ds.class_names == ("a", "b", "c") and ds.y.tolist() == [0, 0, 1, 1, 2, 2]


# -- IDX files (MNIST, Fashion-MNIST), raw or gzipped ----------------------------------------------


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST's test split in miniature: ten 28x28 images and their labels, gzipped like the
    published files (``t10k-images-idx3-ubyte.gz``...)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("idx")
    images, labels = (remote.name for remote in MNIST.files("test"))
    write_idx(folder / images, rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    write_idx(folder / labels, np.arange(10, dtype=np.uint8))
    load_idx_dataset(MNIST, split="test", root=folder, progress=False)  # warm up outside the guard
    return folder


IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]


@st.composite
def idx_header_edit(draw: st.DrawFn, raw: bytes) -> bytes:
    """An IDX file (raw) with its magic, dtype code, dimension count or dimensions rewritten and
    its data cut, grown or left alone."""
    ndim = raw[3]
    dims_now = list(struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim]))
    data = raw[4 + 4 * ndim:]
    zeros, code = b"\x00\x00", raw[2]
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(["code", "ndim", "dims", "data", "magic"]))
        if field == "code":
            code = draw(st.sampled_from(IDX_CODES))
        elif field == "ndim":
            ndim = draw(st.sampled_from([0, 1, 2, 3, 4, 255]) | st.integers(0, 255))
        elif field == "dims":
            dims_now = draw(st.lists(st.sampled_from([0, 1, 10, 28, 60_000, 2**16, 2**31, 2**32 - 1])
                                     | st.integers(0, 2**32 - 1), max_size=5))
        elif field == "data":
            data = draw(mutated_bytes(data, head=len(data)))
        else:
            zeros = draw(st.binary(min_size=2, max_size=2))
    header = zeros + bytes([code, ndim])
    packed = struct.pack(f">{len(dims_now)}I", *dims_now)
    if draw(st.booleans()):  # the dimensions the byte says, or as many as were written
        packed = (packed + b"\x00" * 4 * ndim)[:4 * ndim]
    return header + packed + data


@functools.cache
def zeros_member() -> bytes:
    """A gzip member of 128 MiB of zeros (130 KB): appended to a file's own member, a gzip bomb
    behind the file's header."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return b"".join(packer.compress(bytes(MiB)) for _ in range(128)) + packer.flush()


def idx_variants(raw_gz: bytes) -> st.SearchStrategy[bytes]:
    """An IDX file gzipped (as published) or not, its header edited or its bytes mutated (before
    or after compression), or followed by a gzip bomb."""
    raw = gzip.decompress(raw_gz)
    edited = idx_header_edit(raw)
    return st.one_of(
        edited, edited.map(lambda b: gzip.compress(b, mtime=0)), mutated_bytes(raw),
        mutated_bytes(raw_gz, head=len(raw_gz)), mutated_bytes(raw).map(lambda b: gzip.compress(b, mtime=0)),
        st.sampled_from([raw_gz]).map(lambda b: b + zeros_member()),
    )


@_budget(1.0)
@given(data=st.data())
def test_fuzz_idx(idx_files: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    work = reset_dir(idx_files, tmp_path_factory.getbasetemp() / "fuzz-idx")
    images, labels = (work / remote.name for remote in MNIST.files("test"))
    victim = data.draw(st.sampled_from([images, labels]))
    victim.write_bytes(data.draw(idx_variants(victim.read_bytes())))
    array = attempt(lambda: read_idx(victim), inputs=[victim], names=[victim])
    if array is not None:
        assert isinstance(array, np.ndarray) and array.flags.writeable and array.dtype.isnative
    ds = attempt(lambda: load_idx_dataset(MNIST, split="test", root=work, progress=False),
                 inputs=[images, labels], names=[victim])
    if ds is not None:
        check_dataset(ds)
        assert ds.x.shape[1:] == (1, 28, 28) and len(ds.class_names) == 10


# -- training states: state.json + state-epochNNNN.safetensors -------------------------------------


def _train_data() -> tuple[torch.Tensor, torch.Tensor]:
    """20 points of 1x8x8 inputs, 10 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)


def _train(directory: Path, epochs: int) -> Any:
    """Train for ``epochs`` in all, resuming from ``directory``."""
    from advlab.defenses import Standard, train

    x, y = _train_data()
    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    return train(model, Standard(), x, y, epochs=epochs, batch_size=8, checkpoint_dir=directory, progress=False)


def _resume(directory: Path) -> Any:
    """Resume the 1-epoch run in ``directory`` for a second epoch (which uses all it restored:
    the weights, the optimiser's state and the random generator)."""
    return _train(directory, 2)


@pytest.fixture(scope="module")
def training_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint directory of a real 1-epoch run on 20 points."""
    directory = tmp_path_factory.mktemp("state") / "run"
    _train(directory, 1)
    warm = reset_dir(directory, directory.parent / "warm")
    assert _resume(warm).resumed_from == 1  # warm up outside the memory guard
    return directory


def check_resumed(result: Any) -> None:
    """A resumed run: 2 epochs in all, the history listing them."""
    assert result.resumed_from in (0, 1)
    assert [h["epoch"] for h in result.history] == [1, 2]


@_budget(1.0)
@given(data=st.data())
def test_fuzz_training_state_json(training_state: Path, tmp_path_factory: pytest.TempPathFactory,
                                  data: st.DataObject) -> None:
    from advlab.defenses import read_training_state

    work = reset_dir(training_state, tmp_path_factory.getbasetemp() / "fuzz-state")
    state = work / "state.json"
    state.write_bytes(data.draw(json_file_variants(json.loads(state.read_text()))))
    read = attempt(lambda: read_training_state(work), inputs=[state], names=[state])
    if read is not None:
        assert isinstance(read, dict)
    result = attempt(lambda: _resume(work), inputs=dir_size(work), names=[work])
    if result is not None:
        check_resumed(result)


@_budget(1.0)
@given(data=st.data())
def test_fuzz_training_state_tensors(training_state: Path, tmp_path_factory: pytest.TempPathFactory,
                                     data: st.DataObject) -> None:
    work = reset_dir(training_state, tmp_path_factory.getbasetemp() / "fuzz-state-tensors")
    tensors = next(work.glob("state-epoch*.safetensors"))
    tensors.write_bytes(data.draw(safetensors_variants(tensors.read_bytes())))
    if data.draw(st.integers(0, 9)):  # as a hostile writer would: the digest agrees with the tensors
        state = json.loads((work / "state.json").read_text())
        state["sha256"] = hashlib.sha256(tensors.read_bytes()).hexdigest()
        (work / "state.json").write_text(json.dumps(state))
    result = attempt(lambda: _resume(work), inputs=dir_size(work), names=[work])
    if result is not None:
        check_resumed(result)


# -- the strong cascade's per-point record: record.safetensors + record.json -----------------------

CASCADE_EPS = 0.1


class Interrupted(Exception):
    """Raised from a cascade's callback to stop it after its first batch."""


def _cascade_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Any]:
    """An ``mlp`` on 12 random 1x8x8 points labelled with its own predictions (all correct, so
    every point is attacked), and a two-stage cascade (FGSM, then 2-step PGD)."""
    from advlab.attacks import FGSM, PGD
    from advlab.evaluation.cascade import Cascade

    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    cascade = Cascade({"FGSM": FGSM(eps=CASCADE_EPS), "PGD": PGD(eps=CASCADE_EPS, steps=2)})
    return model, x, y, cascade


def _run_cascade(directory: Path, callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
    model, x, y, cascade = _cascade_setup()
    return cascade.run(model, x, y, batch_size=4, progress=False, checkpoint_path=directory, callback=callback)


@pytest.fixture(scope="module")
def cascade_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The record of a cascade interrupted after its first batch."""
    directory = tmp_path_factory.mktemp("cascade") / "record"

    def stop(event: dict[str, Any]) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        _run_cascade(directory, callback=stop)
    _run_cascade(reset_dir(directory, directory.parent / "warm"))  # warm up outside the memory guard
    return directory


def check_cascade(result: Any) -> None:
    """A cascade's result over the 12 points: per-point tensors of the right shapes and types, a
    point broken only if classified correctly and only by a point inside the threat model, an
    unbroken point's ``x_adv`` its clean input."""
    _, x, _, _ = _cascade_setup()
    n = x.shape[0]
    assert result.correct.shape == (n,) and result.correct.dtype == torch.bool
    assert result.broken_by.shape == (n,) and result.broken_by.dtype == torch.int64
    assert result.num_grads.shape == (n,) and bool((result.num_grads >= 0).all())
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert bool(((result.broken_by >= -1) & (result.broken_by < len(result.names))).all())
    broken = result.broken_by >= 0
    assert bool((result.correct | ~broken).all())
    distance = (result.x_adv - x).abs().flatten(1).amax(1)
    assert bool((distance[broken] <= CASCADE_EPS + 1e-6).all()), "a broken point outside the threat model"
    assert bool((result.x_adv[broken] >= 0).all() and (result.x_adv[broken] <= 1).all())
    assert torch.equal(result.x_adv[~broken], x[~broken])
    result.table(), result.summary(), result.broken_by_name  # noqa: B018 -- none of them may raise


@st.composite
def record_variants(draw: st.DrawFn, raw: bytes) -> bytes:
    """record.safetensors: its header or bytes mutated, or the record metadata it carries (a JSON
    text in the header's ``__metadata__``) edited structurally."""
    if draw(st.integers(0, 2)):
        return draw(safetensors_variants(raw))
    header, body = split_safetensors(raw)
    meta = json.loads(header["__metadata__"]["record"])
    header["__metadata__"]["record"] = dump_json(draw(mutated_json(meta)))
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@_budget(1.0)
@given(data=st.data())
def test_fuzz_cascade_record(cascade_record: Path, tmp_path_factory: pytest.TempPathFactory,
                             data: st.DataObject) -> None:
    work = reset_dir(cascade_record, tmp_path_factory.getbasetemp() / "fuzz-cascade")
    if data.draw(st.booleans()):
        tensors = work / "record.safetensors"
        tensors.write_bytes(data.draw(record_variants(tensors.read_bytes())))
    else:
        meta = work / "record.json"
        meta.write_bytes(data.draw(json_file_variants(json.loads(meta.read_text()))))
    result = attempt(lambda: _run_cascade(work), inputs=dir_size(work), names=[work])
    if result is not None:
        check_cascade(result)


# -- VAE files: vae.json + vae.safetensors ---------------------------------------------------------


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real VAE checkpoint: 1x8x8 images, 2 latent dimensions, hidden width 16, an extra dict."""
    directory = tmp_path_factory.mktemp("vae") / "vae"
    save_vae(VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16), directory, extra={"epochs": 1, "data": "digits"})
    load_vae(directory)  # warm up outside the memory guard
    return directory


def check_vae(loaded: Any, config_path: Path) -> None:
    """A loaded VAE: in eval mode, built as its config says (not a coerced reading of it), holding
    the file's tensors, decoding a latent code to an image of its ``in_shape``, and the config's
    ``extra`` dict."""
    vae, extra = loaded
    check_same_tensors(vae, config_path.with_name("vae.safetensors"))
    config = json.loads(config_path.read_text())
    assert isinstance(vae, VAE) and not vae.training
    assert [list(vae.in_shape), vae.latent_dim, vae.hidden] == [config["in_shape"], config["latent_dim"],
                                                                config["hidden"]]
    assert type(vae.latent_dim) is type(config["latent_dim"]) and type(vae.hidden) is type(config["hidden"])
    assert isinstance(extra, dict) and extra == config.get("extra", {})
    with torch.no_grad():
        out = vae.decode(torch.zeros(1, vae.latent_dim))
    assert out.shape == (1, *vae.in_shape)


@_budget(1.0)
@given(data=st.data())
def test_fuzz_vae(vae_dir: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    work = reset_dir(vae_dir, tmp_path_factory.getbasetemp() / "fuzz-vae")
    if data.draw(st.booleans()):
        config = work / "vae.json"
        config.write_bytes(data.draw(json_file_variants(json.loads(config.read_text()))))
    else:
        weights = work / "vae.safetensors"
        weights.write_bytes(data.draw(safetensors_variants(weights.read_bytes())))
    loaded = attempt(lambda: load_vae(work), inputs=dir_size(work), names=[work])
    # either a clear error naming the folder (checked in attempt) or (VAE, extra) as the files say
    assert loaded is None or (isinstance(loaded, tuple) and len(loaded) == 2), type(loaded)
    if loaded is not None:
        check_vae(loaded, work / "vae.json")
