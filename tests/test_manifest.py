"""The npe2 manifest: valid, cheap to load, and found from a built wheel too."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parent.parent


def test_manifest_validates_and_its_imports_resolve():
    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-unet"
    assert all(c.id.startswith("napari-unet.") for c in manifest.contributions.commands)
    manifest.validate_imports()


def test_npe2_validate_cli():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-unet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_packaged_manifest_is_the_top_level_one():
    assert (ROOT / "napari_unet" / "napari.yaml").read_text() == (ROOT / "napari.yaml").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (path,) = out.glob("napari_unet-*.whl")
    return path


def test_wheel_install_is_found_by_npe2(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("napari_unet/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        zf.extractall(tmp_path / "site")
    assert "napari_unet/sample_data/nuclei2d.tif" in names
    # Python with only the unpacked wheel in front of sys.path: discovery must go through the
    # wheel's entry point and its packaged napari.yaml, not this source checkout.
    code = (
        "import npe2, napari_unet, pathlib;"
        "pm = npe2.PluginManager(); pm.discover();"
        "mf = pm.get_manifest('napari-unet');"
        "print(pathlib.Path(napari_unet.__file__).parent);"
        "print(mf.package_metadata.version);"
        "print(sorted(c.id for c in mf.contributions.commands))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""}, check=True,
                          cwd=tmp_path)
    location, version, commands = proc.stdout.strip().splitlines()
    assert location == str(tmp_path / "site" / "napari_unet")
    assert "napari-unet.write_labels_tiff" in commands
    # and the sample data loads from inside the installed package
    code = ("from napari_unet._sample_data import nuclei_with_strokes;"
            "print([d[0].shape for d in nuclei_with_strokes()])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""},
                          check=True, cwd=tmp_path)
    assert "(512, 512)" in proc.stdout
