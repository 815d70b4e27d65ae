"""Misuse a careless user tries (issue 15): each ends in one error line naming the file, never a traceback or a
misleading success."""

from __future__ import annotations

import subprocess

from conftest import run_cli


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
