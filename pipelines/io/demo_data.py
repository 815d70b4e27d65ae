"""The bundled demo: six real MA-52 clips, downloaded from the dataset authors' repository and checksum-verified.

When the network is unreachable the clips come from a local copy: the folder in ``DUALNET_DEMO_DATA``, else the
``shared/data/ma52/videos`` folder beside this checkout. Every copy is verified against the same sha256 sums.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipelines.errors import InputError
from pipelines.hashing import sha256_file

DEMO_ENV = "DUALNET_DEMO_DATA"
REPO_URL = "https://raw.githubusercontent.com/VUT-HFUT/Micro-Action/e38d24170eafd562e3758e7726d421ae164f3d60"
# local file name -> (path in the authors' repository, sha256)
DEMO_CLIPS: dict[str, tuple[str, str]] = {
    "A1_shaking_body__0030_01_0002.mp4": (
        "assets/ma52_demo/A1 shaking body/0030_01_0002.mp4",
        "ec147fe1f4e91fb41845057a73733e6d6e3072a2366812c6c53d1a0640ceca6f"),
    "A2_turning_around__0078_01_0005.mp4": (
        "assets/ma52_demo/A2 turning around/0078_01_0005.mp4",
        "7b3419938df24a61d6e7b67194179abf89f3b154b27f4de878b5b488a5e2b391"),
    "A3_sitting_straightly__0020_01_0008.mp4": (
        "assets/ma52_demo/A3 sitting straightly/0020_01_0008.mp4",
        "b48d3fe6626be6d356e914c4b4414a0913a043b0e052bf75385d9d75e02b5629"),
    "B1_nodding__0019_02_0078.mp4": (
        "assets/ma52_demo/B1 nodding/0019_02_0078.mp4",
        "632e1955b7367baf55b294d40d62a162e1d82994f13d33bbab1d1b74e6bfa005"),
    "B2_shaking_head__0035_02_0007.mp4": (
        "assets/ma52_demo/B2 shaking head/0035_02_0007.mp4",
        "c79a013cb3e276b660ae2bee866baf197b4eb74731bfdca2ea3b574b8dd10372"),
    "B3_turning_head__0010_02_0101.mp4": (
        "assets/ma52_demo/B3 turning head/0010_02_0101.mp4",
        "659836ba06d5daafae19ceeae2b8374b947ec7fe49324eb8d4f4ac9d9fc2a403"),
}


def shared_data_dir() -> Path:
    """``shared/data`` beside this checkout (present in the project's CI and development machines)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def verify_folder(folder: Path) -> None:
    """Raise InputError naming the first demo clip that is missing or whose sha256 differs."""
    for name, (_, digest) in DEMO_CLIPS.items():
        path = folder / name
        if not path.is_file():
            raise InputError(path, "demo clip missing")
        if sha256_file(path) != digest:
            raise InputError(path, f"sha256 mismatch (expected {digest[:12]}...)")


def download_clips(dest: Path, base_url: str = REPO_URL, timeout: float = 20.0) -> None:
    """Download every demo clip not yet verified in `dest`; each lands only after its checksum matches.

    Raises OSError (urllib's URLError included) when the server cannot be reached, InputError on a bad checksum.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name, (remote, digest) in DEMO_CLIPS.items():
        target = dest / name
        if target.is_file() and sha256_file(target) == digest:
            continue
        url = f"{base_url}/{urllib.parse.quote(remote)}"
        part = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        if sha256_file(part) != digest:
            part.unlink()
            raise InputError(url, f"downloaded file fails its sha256 check (expected {digest[:12]}...)")
        os.replace(part, target)


def fetch_demo_clips(dest: str | Path = "cache/demo/ma52", allow_download: bool = True,
                     base_url: str = REPO_URL) -> tuple[Path, str]:
    """A folder holding the six verified demo clips, and a phrase saying where they came from."""
    dest = Path(dest)
    env = os.environ.get(DEMO_ENV)
    if env:
        verify_folder(Path(env))
        return Path(env), f"{env} (${DEMO_ENV})"
    if allow_download:
        try:
            download_clips(dest, base_url)
            verify_folder(dest)
            return dest, f"{base_url} (downloaded into {dest})"
        except (OSError, urllib.error.URLError) as e:
            reason = getattr(e, "reason", e)
            network_note = f"download failed ({reason}); "
    else:
        network_note = ""
    local = shared_data_dir() / "ma52" / "videos"
    if local.is_dir():
        verify_folder(local)
        return local, f"{network_note}local copy {local}"
    raise InputError(dest, f"{network_note}no local copy either: set ${DEMO_ENV} to a folder with the clips")


def write_demo_csv(folder: Path, path: str | Path) -> Path:
    """A generic-CSV dataset of the demo clips labelled by their MA-52 code (A1 ... B3), each in a train and a val
    split (six clips cannot make a real held-out set: the demo shows the pipeline, not accuracy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for name in sorted(DEMO_CLIPS):
        video = (Path(folder) / name).resolve()
        rows += [f"{video},{name[:2]},train", f"{video},{name[:2]},val"]
    path.write_text("\n".join(rows) + "\n")
    return path
