"""Crafted archives: safe_zip's bounded reader, and client.zip / server.zip built on it.

Every refusal is checked for its message and for the absence of its side effect: memory that
was not allocated, a directory that was not extracted, a file that was not written.
"""

from __future__ import annotations

import gc
import io
import json
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qnn_sklearn import safe_zip
from qnn_sklearn.deployment import ArtifactError, FHEModelClient, FHEModelServer
from qnn_sklearn.deployment.artifacts import CLIENT_ZIP, MODEL_JSON, SERVER_ZIP

BOMB_BYTES = 64 * 2**20
LIMIT = 16 * 2**20


def _zip(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _lie_about_size(data: bytes, name: str, size: int) -> bytes:
    """``data`` with member ``name``'s uncompressed size set to ``size`` in both headers."""
    data = bytearray(data)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == name.encode():
            local = struct.unpack_from("<I", data, central + 42)[0]
            struct.pack_into("<I", data, central + 24, size)
            struct.pack_into("<I", data, local + 22, size)
            return bytes(data)
        central = data.find(b"PK\x01\x02", central + 4)
    raise AssertionError(f"{name} is not in the archive")


def _peak_memory(function) -> int:
    """Peak of traced allocations while ``function`` runs (it is expected to raise)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as raised:
            function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    function.error = str(raised.value)
    return peak


# -- the bounded reader -------------------------------------------------------------------------


def test_a_member_declaring_more_than_the_limit_is_refused_unread(monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_MEMBER_BYTES", LIMIT)
    bomb = _zip({"bomb.bin": bytes(BOMB_BYTES)})
    assert len(bomb) < 2**20

    def read():
        safe_zip.open_archive(io.BytesIO(bomb), "bomb.zip")

    assert _peak_memory(read) < 4 * 2**20
    assert "bomb.bin declares more than 16777216 bytes" in read.error
    assert "MAX_MEMBER_BYTES" in read.error


def test_a_header_that_lies_about_the_size_does_not_lift_the_limit(monkeypatch):
    """The header claims 100 bytes, under the limit; the member inflates to 64 MiB, over it.
    Reading stops where the claim ends and the member is refused: memory stays at a chunk."""
    monkeypatch.setattr(safe_zip, "MAX_MEMBER_BYTES", LIMIT)
    bomb = _lie_about_size(_zip({"bomb.bin": bytes(BOMB_BYTES)}), "bomb.bin", 100)
    archive = safe_zip.open_archive(io.BytesIO(bomb), "bomb.zip")
    assert archive.getinfo("bomb.bin").file_size == 100

    def read():
        safe_zip.read_member(archive, "bomb.bin")

    assert _peak_memory(read) < 4 * 2**20
    assert "Member 'bomb.bin' is corrupt" in read.error


def test_a_header_that_claims_more_than_the_member_holds_is_refused():
    data = _lie_about_size(_zip({"short.json": b"{}"}), "short.json", 1000)
    archive = safe_zip.open_archive(io.BytesIO(data), "short.zip")
    with pytest.raises(ValueError, match="'short.json' inflates to 2 bytes but declares 1000"):
        safe_zip.read_member(archive, "short.json")


def test_members_are_bounded_in_sum_and_in_number(monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_ARCHIVE_BYTES", 3 * 2**20)
    three = _zip({f"{index}.bin": bytes(2**20 + 1) for index in range(3)})
    with pytest.raises(ValueError, match="three.zip declares in all more than 3145728 bytes"):
        safe_zip.open_archive(io.BytesIO(three), "three.zip")
    monkeypatch.setattr(safe_zip, "MAX_MEMBERS", 2)
    with pytest.raises(ValueError, match="has 3 members, over the limit of 2"):
        safe_zip.open_archive(io.BytesIO(_zip({"a": b"", "b": b"", "c": b""})), "abc.zip")


@pytest.mark.parametrize("name", ["../escaped", "/etc/escaped", "a/../../escaped", "a\\b", "C:x"])
def test_member_names_that_could_escape_are_refused(name):
    with pytest.raises(ValueError, match="could be written outside an extraction directory"):
        safe_zip.open_archive(io.BytesIO(_zip({name: b"x"})), "slip.zip")


def test_duplicate_names_and_other_compressions_are_refused():
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = _duplicate("a")
    with pytest.raises(ValueError, match="holds the member 'a' twice"):
        safe_zip.open_archive(io.BytesIO(twice), "twice.zip")
    bzip2 = _zip({"a.json": b"{}"}, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match="compression method 12"):
        safe_zip.open_archive(io.BytesIO(bzip2), "bzip2.zip")


def _duplicate(name: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, b"1")
        archive.writestr(name, b"2")
    return out.getvalue()


def test_json_members_are_capped_before_parsing(monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_JSON_BYTES", 2**20)
    archive = safe_zip.open_archive(io.BytesIO(_zip({"big.json": " " * 2**21 + "{}"})), "a")
    with pytest.raises(ValueError, match="big.json declares more than 1048576 .*MAX_JSON_BYTES"):
        safe_zip.read_json_member(archive, "big.json")
    deep = safe_zip.open_archive(io.BytesIO(_zip({"deep.json": "[" * 10**5 + "]" * 10**5})), "b")
    with pytest.raises(ValueError, match="deep.json nests its JSON too deeply"):
        safe_zip.read_json_member(deep, "deep.json")


def test_missing_members_are_named_with_the_writer_that_writes_them():
    archive = safe_zip.open_archive(io.BytesIO(_zip({"a.json": b"{}"})), "a.zip")
    safe_zip.require_members(archive, ["a.json"], "a.zip", "dump")
    with pytest.raises(
        safe_zip.UnsafeArchiveError, match=r"^a.zip lacks \['b', 'c'\]: it was not written by dump"
    ):
        safe_zip.require_members(archive, ["c", "a.json", "b"], "a.zip", "dump")


def test_a_declared_dtype_is_bounded():
    assert safe_zip.declared_dtype("<U5", 3, "labels") == np.dtype("<U5")
    with pytest.raises(ValueError, match="labels: 2 values of <U999999999 take more than"):
        safe_zip.declared_dtype("<U999999999", 2, "labels")
    with pytest.raises(ValueError, match="labels: not a numpy dtype"):
        safe_zip.declared_dtype({"names": ["a"]}, 2, "labels")


# -- client.zip ---------------------------------------------------------------------------------


def _copy_model(model_dir: Path, target: Path, archive: str, change=None, members=None) -> Path:
    """A copy of the model directory whose ``archive`` has ``qnn_sklearn.json`` through
    ``change`` and ``members`` added or replaced."""
    target.mkdir()
    for name in (CLIENT_ZIP, SERVER_ZIP):
        (target / name).write_bytes((model_dir / name).read_bytes())
    members = dict(members or {})
    with zipfile.ZipFile(model_dir / archive) as old:
        contents = {name: old.read(name) for name in old.namelist()}
    if change is not None:
        description = json.loads(contents[MODEL_JSON])
        change(description)
        contents[MODEL_JSON] = json.dumps(description).encode()
    (target / archive).write_bytes(_zip({**contents, **members}))
    return target


def test_an_oversized_client_json_is_refused_before_parsing(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_JSON_BYTES", 2**20)
    padded = _copy_model(
        model_dir, tmp_path / "m", CLIENT_ZIP, lambda d: d.update(padding=" " * 2**21)
    )
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match="qnn_sklearn.json declares more than 1048576"):
            FHEModelClient(padded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**21


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(input_shape=[10**9]), r"input_shape\[0\] must be an integer in"),
        (lambda d: d.update(input_shape=[60_000, 60_000]), "the product of input_shape"),
        (lambda d: d.update(input_shape=[1] * 9), "the number of axes of input_shape"),
        (lambda d: d["input_quantizer"].update(n_bits=10**12), "input_quantizer.n_bits"),
        (
            lambda d: d.update(classes={"dtype": "<U999999999", "values": ["a", "b"]}),
            "classes.dtype: 2 values",
        ),
        (lambda d: d.pop("input_quantizer"), "malformed .KeyError: 'input_quantizer'"),
    ],
)
def test_sizes_in_the_client_json_are_bounded(model_dir, tmp_path, change, message):
    with pytest.raises(ArtifactError, match=message):
        FHEModelClient(_copy_model(model_dir, tmp_path / "m", CLIENT_ZIP, change))


def test_a_client_zip_without_its_description_is_refused(model_dir, tmp_path):
    target = _copy_model(model_dir, tmp_path / "m", CLIENT_ZIP)
    with zipfile.ZipFile(model_dir / CLIENT_ZIP) as old:
        kept = {name: old.read(name) for name in old.namelist() if name != MODEL_JSON}
    (target / CLIENT_ZIP).write_bytes(_zip(kept))
    with pytest.raises(ArtifactError, match=rf"lacks \['{MODEL_JSON}'\]: it was not written by"):
        FHEModelClient(target)


# -- server.zip ---------------------------------------------------------------------------------


@pytest.fixture
def scratch_tmp(tmp_path, monkeypatch) -> Path:
    """The process's temporary directory for this test, where concrete extracts server.zip."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"bomb.bin": bytes(BOMB_BYTES)}, "bomb.bin declares more than 16777216"),
        ({"../escaped.so": b"x"}, "'../escaped.so', which could be written outside"),
    ],
)
def test_an_unsafe_server_zip_is_refused_before_extraction(
    model_dir, tmp_path, scratch_tmp, monkeypatch, members, message
):
    monkeypatch.setattr(safe_zip, "MAX_MEMBER_BYTES", LIMIT)
    crafted = _copy_model(model_dir, tmp_path / "m", SERVER_ZIP, members=members)
    with pytest.raises(ArtifactError, match=message):
        FHEModelServer(crafted).load()
    assert list(scratch_tmp.iterdir()) == []
    assert not (tmp_path / "escaped.so").exists()


def test_a_lying_server_member_is_refused_before_extraction(model_dir, tmp_path, scratch_tmp):
    crafted = _copy_model(model_dir, tmp_path / "m", SERVER_ZIP, members={"pad": bytes(2**22)})
    zip_path = crafted / SERVER_ZIP
    zip_path.write_bytes(_lie_about_size(zip_path.read_bytes(), "pad", 10))
    with pytest.raises(ArtifactError, match="Member 'pad' is corrupt"):
        FHEModelServer(crafted).load()
    assert list(scratch_tmp.iterdir()) == []


def test_a_server_zip_without_its_library_is_refused_before_extraction(
    model_dir, tmp_path, scratch_tmp
):
    crafted = tmp_path / "m"
    crafted.mkdir()
    with zipfile.ZipFile(model_dir / SERVER_ZIP) as old:
        kept = {name: old.read(name) for name in old.namelist() if name != "sharedlib.so"}
    (crafted / SERVER_ZIP).write_bytes(_zip(kept))
    with pytest.raises(
        ArtifactError, match=r"lacks \['sharedlib.so'\]: it was not written by FHEModelDev"
    ):
        FHEModelServer(crafted).load()
    assert list(scratch_tmp.iterdir()) == []


def test_close_removes_the_extraction_directory(model_dir, scratch_tmp):
    server = FHEModelServer(model_dir).load()
    first = server.extraction_dir
    assert first.parent == scratch_tmp and (first / "sharedlib.so").is_file()
    server.load()  # loading again releases the first copy
    assert not first.exists() and list(scratch_tmp.iterdir()) == [server.extraction_dir]
    server.close()
    assert list(scratch_tmp.iterdir()) == [] and server.server is None
    with FHEModelServer(model_dir) as in_block:
        assert (in_block.extraction_dir / "sharedlib.so").is_file()
    assert list(scratch_tmp.iterdir()) == []
    FHEModelServer(model_dir).load()  # a check-only load, dropped at once
    gc.collect()
    assert list(scratch_tmp.iterdir()) == []


def test_a_closed_server_loads_again_to_run(model_dir, fhe_client, evaluation_keys, X_test, tiny):
    server = FHEModelServer(model_dir).load()
    server.close()
    encrypted = fhe_client.quantize_encrypt_serialize(X_test[:2])
    result = server.run(encrypted, evaluation_keys)
    assert (server.extraction_dir / "sharedlib.so").is_file()
    server.close()
    expected = tiny[0].forward(X_test[:2])
    assert np.array_equal(fhe_client.deserialize_decrypt_dequantize(result), expected)
