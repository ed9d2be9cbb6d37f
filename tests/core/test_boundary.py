"""The core and the CLI must run without any GUI stack."""

import subprocess
import sys
from pathlib import Path

import napari_unet.core as core

# Every core module, found on disk so that a new one cannot be forgotten here.
CORE_MODULES = sorted(
    f"napari_unet.core.{path.stem}" for path in (Path(core.__file__).parent).glob("*.py")
    if path.stem != "__init__"
) + ["napari_unet.cli"]
GUI_MODULES = ["napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui",
               "vispy"]


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_core_and_cli_import_no_gui_stack():
    loaded = _loaded_after("\n".join(f"import {m}" for m in CORE_MODULES))
    assert "torch" in loaded  # the import really happened
    assert loaded.isdisjoint(GUI_MODULES), loaded & set(GUI_MODULES)


def test_writer_and_sample_data_import_no_torch():
    # napari imports these when saving a layer or opening the sample: keep them light.
    loaded = _loaded_after("import napari_unet._writer, napari_unet._sample_data")
    assert "torch" not in loaded


def test_package_import_is_cheap():
    # napari imports the package to read the manifest; that must not pull torch in.
    loaded = _loaded_after("import napari_unet")
    assert "torch" not in loaded
    assert loaded.isdisjoint(GUI_MODULES)
