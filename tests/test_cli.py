"""The `dualnet` command line on a real store: status, gc, and one-line errors for bad arguments."""

from __future__ import annotations

import shutil

from conftest import requires_shared, run_cli

pytestmark = requires_shared


def test_status_lists_the_output(ma52_store):
    result = run_cli("status", "--store", str(ma52_store.root))
    assert result.returncode == 0, result.stderr
    counts, params = [line.split() for line in result.stdout.splitlines() if line.startswith("extract")]
    assert counts[2] == "*" and counts[3:6] == ["6", "0", "6"]  # done, failed, total
    assert params[1] == counts[1] and "dtype=float32" in params[2:]


def test_gc_dry_run_then_real(ma52_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(ma52_store.root, store)
    stale = store / "extract" / "0123456789abcdef"
    shutil.copytree(next((store / "extract").iterdir()), stale)
    dry = run_cli("gc", "--store", str(store), "--dry-run")
    assert dry.returncode == 0 and "would remove 1 path(s)" in dry.stdout and stale.exists()
    real = run_cli("gc", "--store", str(store))
    assert real.returncode == 0 and "removed 1 path(s)" in real.stdout and not stale.exists()


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, message in [
        (("extract", "x.mp4", "--shard", "5/2", "--store", str(tmp_path)), "shard '5/2' needs 0 <= i < n"),
        (("extract", "x.mp4", "--dtype", "int8", "--store", str(tmp_path)), "dtype 'int8' is not one of"),
        (("extract", str(tmp_path / "*.mkv"), "--store", str(tmp_path)), "no files match this pattern"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2, result
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
