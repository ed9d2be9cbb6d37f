"""Style and the architecture boundary (ruff banned-api keeps Qt/napari out of the core)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_banned_api_catches_a_gui_import_in_the_core(tmp_path):
    # The rule itself must work, not just be configured.
    probe = ROOT / "napari_unet" / "core" / "_probe_banned_import.py"
    probe.write_text('"""Probe."""\n\nimport qtpy  # noqa: F401\n')
    try:
        proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(probe)],
                              capture_output=True, text=True, cwd=ROOT)
    finally:
        probe.unlink()
    assert proc.returncode == 1
    assert "TID251" in proc.stdout and "must not import Qt" in proc.stdout
