"""#11 reproducers: parsers of untrusted files. Any input gives a result or a clear ValueError,
and nothing allocates more than the file's own size justifies before validating it. Seen before:
an npz whose header claims 4 TB raised MemoryError, a truncated npz raised BadZipFile, a PNG
claiming 20000x20000 raised PIL's DecompressionBombError, a 100,000-deep JSON card recursed, a
corrupt VAE file raised from inside torch."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data import load_dataset


def _npy_member(shape: tuple[int, ...], payload: bytes = b"\x00" * 64) -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header = header + " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


@pytest.fixture()
def good_npz(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, x=np.random.default_rng(0).random((10, 1, 8, 8)).astype("float32"), y=np.arange(10) % 3)
    return path


def test_an_npz_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_member((1_000_000, 1000, 1000)))
        z.writestr("y.npy", _npy_member((10,)))
    with pytest.raises(ValueError, match=r"claims shape \(1000000, 1000, 1000\) .*corrupt or hostile"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_truncated_npz_is_a_clear_error(good_npz, tmp_path, cut):
    data = good_npz.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError, match="npz|npy|archive"):
        load_dataset(f"npz:{bad}")


def test_an_empty_npz_names_what_it_expected(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    with pytest.raises(ValueError, match="expected arrays 'x' and 'y'"):
        load_dataset(f"npz:{path}")


def _png(width: int, height: int, colour: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    body = zlib.compress(b"\x00" * (width + 1) * 4)   # a few rows: the header alone claims the size
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20_000, 9_000])
def test_a_png_claiming_a_huge_image_is_refused_from_its_header(tmp_path, side):
    for cls in "ab":
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / cls / "1.png")
    (tmp_path / "b" / "2.png").write_bytes(_png(side, side))
    with pytest.raises(ValueError, match="2.png"):
        load_dataset(f"folder:{tmp_path}")


def test_a_deeply_nested_json_card_is_a_value_error(tmp_path):
    from advlab.models import load, load_card

    (tmp_path / "card.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "model.safetensors").write_bytes(b"")
    for read in (load_card, load):
        with pytest.raises(ValueError, match="nested too deeply"):
            read(tmp_path)


def test_a_corrupt_or_mismatched_vae_is_a_value_error(tmp_path):
    from advlab.models.generative import VAE, load_vae, save_vae

    save_vae(VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16), tmp_path / "vae")
    weights = next((tmp_path / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ValueError, match="VAE checkpoint .* corrupt"):
        load_vae(tmp_path / "vae")
    save_vae(VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16), tmp_path / "vae2")
    config = next(p for p in (tmp_path / "vae2").glob("*.json"))
    data = json.loads(config.read_text())
    data["in_shape"] = [1, 100_000, 100_000]
    config.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do not have the shapes"):
        load_vae(tmp_path / "vae2")
    assert torch.get_default_device().type == "cpu"


def test_an_npz_with_a_corrupt_deflate_stream_is_a_value_error(good_npz, tmp_path):
    # found by tests/test_fuzz_parsers.py: zlib.error leaked out of load_npz (only BadZipFile,
    # OSError and EOFError were caught)
    buffer = tmp_path / "z.npz"
    with np.load(good_npz) as a:
        np.savez_compressed(buffer, x=a["x"], y=a["y"])
    raw = bytearray(buffer.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[26:30])
    raw[30 + name_len + extra_len] = 0x07  # the first deflate block: final, reserved type 3
    buffer.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"z\.npz.*invalid block type"):
        load_dataset(f"npz:{buffer}")


def _set_member_size(raw: bytes, size: int) -> bytes:
    """``raw`` (a zip) with its first member's uncompressed size forged in both of its headers."""
    data = bytearray(raw)
    for signature, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        data[start + at:start + at + 4] = struct.pack("<I", size)
    return bytes(data)


def _deflated_npz(x_member: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", x_member)
        z.writestr("y.npy", _npy_member((10,), b"\x00" * 40))
    return out.getvalue()


def test_an_npz_whose_zip_directory_agrees_with_a_huge_header_is_refused(tmp_path):
    # found by tests/test_fuzz_parsers.py: the header's claim was only compared with the member's
    # size in the zip directory, which is just as easy to forge; 343 bytes made NumPy allocate
    # 3.7 GiB (MemoryError under a memory limit)
    path = tmp_path / "forged.npz"
    path.write_bytes(_set_member_size(_deflated_npz(_npy_member((1000, 1000, 1000))), 2**32 - 1))
    with pytest.raises(ValueError, match=r"claims shape \(1000, 1000, 1000\) .*corrupt or hostile"):
        load_dataset(f"npz:{path}")


def test_a_short_npz_member_is_called_corrupt_not_pickled(tmp_path):
    # found by tests/test_fuzz_parsers.py: every ValueError while reading was reported as "an array
    # is stored as Python objects, which needs pickle", here NumPy's "EOF: reading array data"
    path = tmp_path / "short.npz"
    path.write_bytes(_set_member_size(_deflated_npz(_npy_member((10, 1, 8, 8))), 128 + 2560))
    with pytest.raises(ValueError, match=r"short\.npz: a member of the archive is truncated or corrupt") as err:
        load_dataset(f"npz:{path}")
    assert "pickle" not in str(err.value)


def test_an_object_array_in_an_npz_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.zeros((2, 1, 8, 8), dtype="float32"), y=np.array([0, 1], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz\['y'\]: the array is stored as Python objects"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_npz_members_other_than_stored_or_deflated_are_refused(tmp_path, method):
    # found by tests/test_fuzz_parsers.py: a corrupt LZMA member raised _lzma.LZMAError, and no
    # ratio bounds what a bzip2 or LZMA member's forged size may claim
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr("x.npy", _npy_member((1, 1, 4, 4)))
        z.writestr("y.npy", _npy_member((1,), b"\x00" * 8))
    with pytest.raises(ValueError, match=r"other\.npz\['x'\]: .*neither stored nor deflated"):
        load_dataset(f"npz:{path}")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_with_a_short_ihdr_is_an_error_naming_the_file(tmp_path):
    # found by tests/test_fuzz_parsers.py: PIL raises a bare ValueError ("Truncated IHDR chunk",
    # also for tRNS, acTL, fcTL, fdAT chunks), which load_image_folder passed on without the file
    for cls in "ab":
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / cls / "1.png")
    rest = (tmp_path / "a" / "1.png").read_bytes()[33:]  # the chunks after the 13-byte IHDR
    (tmp_path / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBB", 8, 8, 8, 0, 0, 0))
                                           + rest)
    with pytest.raises(ValueError, match=r"b/2\.png: cannot read image \(Truncated IHDR chunk\)"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("chunk", [_chunk(b"fdAT", b"\x00\x00\x00\x00"), _chunk(b"iCCP", b"")],
                         ids=["fdAT-out-of-sequence", "empty-iCCP"])
def test_a_broken_chunk_after_the_image_data_is_an_error_naming_the_file(tmp_path, chunk):
    # found by tests/test_fuzz_parsers.py: chunks after IDAT are only read while decoding, where
    # PIL lets SyntaxError ("APNG contains frame sequence errors") and IndexError (an empty iCCP)
    # out; its Image.open turns the same exceptions into "cannot identify image file"
    for cls in "ab":
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / cls / "1.png")
    raw = (tmp_path / "a" / "1.png").read_bytes()
    (tmp_path / "b" / "2.png").write_bytes(raw[:-12] + chunk + raw[-12:])  # just before IEND
    with pytest.raises(ValueError, match=r"b/2\.png: cannot decode image"):
        load_dataset(f"folder:{tmp_path}")


def test_a_png_chunk_claiming_2_gb_allocates_nothing_like_it(tmp_path):
    # found by tests/test_fuzz_parsers.py: PIL reads the rest of an image-data chunk with one
    # read() of the length the chunk claims; from a file that allocates the claim first (2 GiB
    # here for an 80-byte PNG, a MemoryError under a memory limit)
    import tracemalloc

    for cls in "ab":
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / cls / "1.png")
    raw = bytearray((tmp_path / "a" / "1.png").read_bytes())
    at = raw.find(b"IDAT") - 4
    raw[at:at + 4] = struct.pack(">I", 2**31 - 1)
    (tmp_path / "b" / "2.png").write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        load_dataset(f"folder:{tmp_path}")  # the deflate stream inside is complete: PIL decodes it
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_pngs_claiming_more_pixels_than_their_bytes_can_encode_are_refused_from_the_header(tmp_path):
    # found by tests/test_fuzz_parsers.py: 111-byte PNGs claiming 8192x8192 RGBA (within
    # MAX_PIXELS, one size throughout the folder) made PIL allocate the whole image, 330 MB of
    # address space, before finding the data truncated (a MemoryError under a memory limit)
    for cls in "ab":
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "1.png").write_bytes(_png(8192, 8192, colour=6))
    with pytest.raises(ValueError, match=r"a/1\.png: its header claims 8192x8192 pixels, more than its 111 bytes"):
        load_dataset(f"folder:{tmp_path}")


def test_a_large_blank_png_still_loads(tmp_path):
    # the bound above is deflate's: a blank 1-bit image compresses to ~8,200 pixels a byte
    (tmp_path / "a").mkdir()
    Image.new("1", (2000, 2000)).save(tmp_path / "a" / "blank.png", optimize=True)
    assert load_dataset(f"folder:{tmp_path}").x.shape == (1, 1, 2000, 2000)


def test_a_gzip_bomb_behind_a_small_idx_header_is_refused_without_inflating_it(tmp_path):
    # found by tests/test_fuzz_parsers.py (a gzip bomb after the file's own member, under its memory
    # bound): read_idx decompressed the whole stream before comparing it with the header; 64 KB
    # claiming 10 labels took 148 MB
    import tracemalloc

    from advlab.data import IdxFormatError, read_idx

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts = [packer.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(10))]
    parts += [packer.compress(bytes(2**20)) for _ in range(64)]
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"".join(parts) + packer.flush())
    tracemalloc.start()
    try:
        with pytest.raises(IdxFormatError, match=r"has trailing bytes: header says \(10,\) of uint8"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


@pytest.mark.parametrize(("change", "message"), [
    ({"extra": 5}, "extra must be a JSON object"), ({"extra": None}, "extra must be a JSON object"),
    ({"extra": [["k", "v"]]}, "extra must be a JSON object"), ({"latent_dim": float("inf")}, "latent_dim must be"),
    ({"latent_dim": 2.7}, "latent_dim must be"), ({"hidden": "16"}, "hidden must be"),
], ids=["extra-int", "extra-null", "extra-pairs", "latent-inf", "latent-float", "hidden-string"])
def test_a_vae_config_is_read_as_written(tmp_path, change, message):
    # found by tests/test_fuzz_parsers.py: load_vae coerced the config with int() and dict(): an
    # infinite latent_dim raised OverflowError, an int extra TypeError, null extra TypeError;
    # latent_dim 2.7 loaded as 2, hidden "16" as 16 and extra [["k", "v"]] as {"k": "v"}
    from advlab.models.generative import VAE, load_vae, save_vae

    save_vae(VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16), tmp_path / "vae")
    config = tmp_path / "vae" / "vae.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(ValueError, match=message) as err:
        load_vae(tmp_path / "vae")
    assert str(tmp_path / "vae") in str(err.value)


def test_vae_weights_that_are_not_floats_are_refused_not_cast(tmp_path):
    # found by tests/test_fuzz_parsers.py: load_vae compared shapes only and load_state_dict cast
    # an int32 weight (the float bits read as integers) to floats around 1e9 without a word
    from safetensors.torch import load_file, save_file

    from advlab.models.generative import VAE, load_vae, save_vae

    save_vae(VAE(in_shape=(1, 8, 8), latent_dim=2, hidden=16), tmp_path / "vae")
    weights = tmp_path / "vae" / "vae.safetensors"
    tensors = load_file(str(weights))
    tensors["decoder.net.0.weight"] = tensors["decoder.net.0.weight"].view(torch.int32)
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match=r"VAE checkpoint .* corrupt .*not all floating point"):
        load_vae(tmp_path / "vae")


@pytest.mark.parametrize("header", [b"[\n", b"{'descr': '<f4', 'shape': (1,\n"], ids=["bracket", "dict"])
def test_an_npy_header_that_is_not_a_literal_is_a_value_error(tmp_path, header):
    # found by tests/test_fuzz_parsers.py: NumPy reads a version 1 header with ast.literal_eval
    # and, when that fails, retokenizes it; an unclosed bracket leaked tokenize.TokenError
    path = tmp_path / "token.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
        z.writestr("y.npy", _npy_member((10,), b"\x00" * 40))
    with pytest.raises(ValueError, match=r"token\.npz\['x'\]: not a readable \.npy member"):
        load_dataset(f"npz:{path}")


def test_an_npz_whose_arrays_disagree_in_length_names_the_file(tmp_path):
    """Found by tests/test_fuzz_parsers.py: x with 0 images beside 10 labels raised the Dataset's
    ValueError without naming the file."""
    path = tmp_path / "short.npz"
    np.savez(path, x=np.zeros((0, 1, 8, 8), dtype="float32"), y=np.arange(10) % 3)
    with pytest.raises(ValueError, match=r"short\.npz.*0 images but y has 10 labels"):
        load_dataset(f"npz:{path}")
