"""The layering of the packages (pyproject's [tool.importlinter] contracts): lower layers never import higher ones,
and a stage never imports another stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed by the dev extra (`make setup`)
    result = subprocess.run([str(lint_imports), "--no-logo", "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "A stage never imports another stage KEPT" in result.stdout, result.stdout[-6000:]
