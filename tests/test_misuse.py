"""Misuse a careless user tries (issue 15): each ends in one error line naming the file, never a traceback or a
misleading success."""

from __future__ import annotations

import subprocess

import torch

from conftest import MA52_VIDEOS, requires_shared, run_cli, shortest_clip


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The only non-empty line of stderr, which must be an error (no traceback, no second line)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_malformed_csv_row_names_the_file_and_row(tmp_path):
    (tmp_path / "store").mkdir()
    short = tmp_path / "short.csv"
    short.write_text("path,label,split\na.mp4,B1,train\nb.mp4\nc.mp4,B2,val\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label,split\na.mp4,B1,train\n\nb.mp4,,val\n")
    for csv, problem in ((short, f"{short}:3: row has 1 field(s), the header has 3 (path,label,split)"),
                         (empty, f"{empty}:4: empty label")):
        for args in (("datasets", "show", "csv", str(csv)),
                     ("train", "--dataset", "csv", "--root", str(csv), "--store", str(tmp_path / "store"))):
            result = run_cli(*args)
            assert result.returncode == 2 and problem in _one_error_line(result), result.stderr


@requires_shared
def test_a_file_that_is_not_a_checkpoint_fails_in_every_command(ma52_tubes, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    clips = tmp_path / "clips.csv"
    clips.write_text("path,label,split\n" + "".join(f"{v},{v.name[:2]},val\n" for v in MA52_VIDEOS.glob("*.mp4")))
    store = str(ma52_tubes.store.root)
    for bad, problem in ((text, "not a dualnet checkpoint ("),
                         (foreign, "not a dualnet checkpoint (a torch file without 'model' and 'config')")):
        for args in (("eval", "--dataset", "csv", "--root", str(clips), "--store", store, "--checkpoint", str(bad)),
                     ("predict", str(shortest_clip()), "--checkpoint", str(bad), "--store", str(tmp_path / "s")),
                     ("export", str(bad), "--onnx", str(tmp_path / "m.onnx"))):
            result = run_cli(*args)
            assert result.returncode == 2 and f"{bad}: {problem}" in _one_error_line(result), (args, result.stderr)
    assert not (tmp_path / "m.onnx").exists()
