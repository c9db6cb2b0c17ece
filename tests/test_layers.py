"""The import layering of composer (issue 17): pyproject's import-linter contracts hold, so no
module imports from a layer above its own (no cycles: runtime no longer imports provision's
caller back), and the model stage's parts depend one way. The plan path's freedom from torch is
checked where it matters, at run time: tests/test_plan.py::test_plan_imports_neither_torch_nor_transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "0 broken" in done.stdout
