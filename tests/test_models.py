"""Model files by path or URL: downloaded once into the store, checksummed, zips unpacked."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from pipelines.errors import InputError
from pipelines.io.downloads import resolve_model


def test_url_is_downloaded_once_and_verified(tmp_path):
    source = tmp_path / "remote" / "pose.onnx"
    source.parent.mkdir()
    source.write_bytes(b"onnx bytes")
    models = tmp_path / "store" / "models"
    url = source.as_uri()
    first = resolve_model(url, models)
    assert first.read_bytes() == b"onnx bytes" and models in first.parents
    source.unlink()  # a second use needs no network
    assert resolve_model(url, models) == first
    first.write_bytes(b"tampered")
    with pytest.raises(InputError, match="fails its recorded sha256 check"):
        resolve_model(url, models)


def test_expected_checksum_and_zip(tmp_path):
    archive = tmp_path / "rtmw.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("rtmw/end2end.onnx", b"model")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    path = resolve_model(f"{archive.as_uri()}#sha256={digest}", tmp_path / "models")
    assert path.name == "end2end.onnx" and path.read_bytes() == b"model"
    with pytest.raises(InputError, match="does not match the expected"):
        resolve_model(f"{archive.as_uri()}#sha256={'0' * 64}", tmp_path / "other")


def test_missing_local_file(tmp_path):
    with pytest.raises(InputError, match="model file not found"):
        resolve_model(str(tmp_path / "none.onnx"), tmp_path / "models")
