"""What `make demo` prints after the stages: the cached keypoints read back through the loading API."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from pipelines.formats.keypoints import KeypointSet


def _found(score: np.ndarray, part: slice) -> str:
    """Share of frames where any keypoint of `part` has a positive score."""
    return f"{100 * (score[:, part] > 0).any(axis=1).mean():.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="cache")
    args = parser.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=140)
    kps = KeypointSet(args.store)
    table = Table(title=f"keypoints in {args.store} (extract {kps.output.key})")
    for col in ("video", "frames", "fps", "size", "body detected", "left hand", "right hand", "face"):
        table.add_column(col)
    for name in kps.names():
        clip = kps.load(name)
        score = clip.keypoints[..., 2]  # (T, V)
        table.add_row(name, str(len(clip.timestamps)), f"{clip.fps:.1f}", f"{clip.width}x{clip.height}",
                      f"{100 * clip.detected.mean():.0f}%", _found(score, slice(33, 54)), _found(score, slice(54, 75)),
                      _found(score, slice(75, None)))
    console.print(table)
    df = kps.dataframe(kps.names()[:1])
    console.print(f"DataFrame of one video: {len(df)} rows, columns {list(df.columns)}")


if __name__ == "__main__":
    main()
