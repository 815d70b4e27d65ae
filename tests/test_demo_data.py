"""The demo clips: download with sha256 checks (from a local HTTP server here), and the offline fallback."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.parse

import pytest

from conftest import MA52_VIDEOS, requires_shared
from pipelines.errors import InputError
from pipelines.io import demo_data

pytestmark = requires_shared


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server laid out like the MA-52 repository's raw files."""
    root = tmp_path / "mirror"
    for name, (remote, _) in demo_data.DEMO_CLIPS.items():
        target = root / remote
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MA52_VIDEOS / name, target)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_every_clip(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(demo_data.DEMO_ENV, raising=False)
    _, url = mirror
    folder, origin = demo_data.fetch_demo_clips(tmp_path / "dest", base_url=url)
    assert folder == tmp_path / "dest" and url in origin
    assert sorted(p.name for p in folder.glob("*.mp4")) == sorted(demo_data.DEMO_CLIPS)
    assert not list(folder.glob("*.part"))


def test_corrupted_download_is_rejected_and_not_kept(mirror, tmp_path):
    root, url = mirror
    remote = demo_data.DEMO_CLIPS["B1_nodding__0019_02_0078.mp4"][0]
    (root / remote).write_bytes(b"tampered")
    with pytest.raises(InputError, match="fails its sha256 check") as err:
        demo_data.download_clips(tmp_path / "dest", url)
    assert urllib.parse.quote(remote) in str(err.value)
    assert not (tmp_path / "dest" / "B1_nodding__0019_02_0078.mp4").exists()


def test_offline_falls_back_to_the_local_copy_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(demo_data.DEMO_ENV, raising=False)
    folder, origin = demo_data.fetch_demo_clips(tmp_path / "dest", base_url="http://127.0.0.1:9")
    assert folder.resolve() == MA52_VIDEOS.resolve()
    assert origin.startswith("download failed") and "local copy" in origin


def test_env_folder_is_verified(tmp_path, monkeypatch):
    folder = tmp_path / "clips"
    shutil.copytree(MA52_VIDEOS, folder)
    monkeypatch.setenv(demo_data.DEMO_ENV, str(folder))
    assert demo_data.fetch_demo_clips(tmp_path / "dest")[0] == folder
    (folder / "A1_shaking_body__0030_01_0002.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="A1_shaking_body__0030_01_0002.mp4: sha256 mismatch"):
        demo_data.fetch_demo_clips(tmp_path / "dest")
