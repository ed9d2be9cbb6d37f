import os
import pickle
import stat
import sys
import zipfile

import numpy as np
import pytest
import torch

from napari_unet.core.checkpoint import load_model, save_model
from napari_unet.core.config import ModelConfig, TrainConfig
from napari_unet.core.errors import CheckpointError
from napari_unet.core.inference import predict
from napari_unet.core.training import TrainingRun
from tests.bad_files import RunsCode, crafted_checkpoint, newer_checkpoint


@pytest.fixture
def model(blobs):
    image, strokes, _ = blobs
    return TrainingRun(image, strokes, TrainConfig(patch_size=32, max_steps=3, device="cpu"),
                       model_config=ModelConfig(depth=2, base_channels=8),
                       class_names=("background", "nucleus")).run_to_end().model


def test_round_trip_keeps_everything(model, blobs, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.normalization == model.normalization
    assert loaded.class_names == ("background", "nucleus")
    assert loaded.metadata["steps"] == 3
    assert loaded.metadata["seed"] == 0
    assert "napari_unet_version" in loaded.metadata
    image = blobs[0]
    a = predict(model, image, return_probabilities=True).probabilities
    b = predict(loaded, image, return_probabilities=True).probabilities
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_saved_model_is_readable_by_the_group(model, tmp_path):
    """Not owner-only, as the temporary file it is first written to would make it."""
    old = os.umask(0o022)
    try:
        path = save_model(model, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_checkpoint_crafted_to_run_code_is_refused(model, tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(model, tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_raw_pickle_is_refused(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(RunsCode(tmp_path / "pwned")))
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def test_newer_format_is_refused_with_advice(model, tmp_path):
    newer_checkpoint(model, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="upgrade"):
        load_model(tmp_path / "new.pt")


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04garbage"])
def test_corrupt_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable model file"):
        load_model(path)


def test_truncated_file_is_refused(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_other_torch_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a napari-unet model"):
        load_model(tmp_path / "other.pt")
    data = {"format": "napari-unet-model", "format_version": 1, "model_config": {}}
    torch.save(data, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        load_model(tmp_path / "half.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_failed_save_leaves_previous_file(model, tmp_path, monkeypatch):
    path = save_model(model, tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left
    assert zipfile.is_zipfile(path)
