"""The command line on real files.

A few tests run it as a user does, a subprocess through ``python -m``; the rest call
``cli.main`` in this process (the ``cli`` fixture), the same code behind the entry point
without a 2.5 s import of torch per call.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.checkpoint import load_model
from tests.conftest import make_blobs, strokes_from_truth


def run_cli(*args, check=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture
def cli(capsys):
    """Run ``cli.main`` in this process; returns what :func:`run_cli` returns."""

    def run(*args, check=False):
        capsys.readouterr()
        argv = [str(a) for a in args]
        code = main(argv)
        captured = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(captured.err)
        return subprocess.CompletedProcess(argv, code, captured.out, captured.err)

    return run


@pytest.fixture
def files(tmp_path):
    image, truth = make_blobs((64, 80))
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "strokes.tif", strokes_from_truth(truth))
    return tmp_path


def test_train_then_predict_round_trip(files):
    out = run_cli("train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
                  "--out", files / "m.pt", "--steps", "5", "--device", "cpu", "--seed", "3",
                  "--intensity-jitter", "off", "--edge-weight", "0.5", check=True)
    assert "trained 5 steps" in out.stderr
    model = load_model(files / "m.pt")
    assert model.metadata["steps"] == 5 and model.metadata["seed"] == 3
    assert model.metadata["train_config"]["intensity_jitter"] == "off"
    assert model.metadata["edge_weight"] == 0.5
    out = run_cli("predict", "--model", files / "m.pt", "--image", files / "img.tif",
                  "--out", files / "mask.tif", "--probabilities", files / "p.tif", check=True)
    assert "wrote" in out.stderr
    with tifffile.TiffFile(files / "mask.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "YX"
        mask = tif.asarray()
    assert mask.shape == (64, 80) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {1, 2}
    probs = tifffile.imread(files / "p.tif")
    assert probs.shape == (2, 64, 80)
    np.testing.assert_array_equal(probs.argmax(0) + 1, mask)


def test_fine_tuning_keeps_the_models_z_context(tmp_path, cli):
    image, truth = make_blobs((40, 48))
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([image] * 4), photometric="minisblack")
    strokes = np.zeros((4, 40, 48), np.uint8)
    strokes[1] = strokes_from_truth(truth)
    tifffile.imwrite(tmp_path / "strokes.tif", strokes, photometric="minisblack")
    common = ["--image", tmp_path / "stack.tif", "--labels", tmp_path / "strokes.tif",
              "--steps", "2", "--axes", "ZYX"]
    cli("train", *common, "--out", tmp_path / "a.pt", "--z-context", "2", check=True)
    line = _error_of(cli("train", *common, "--out", tmp_path / "b.pt", "--init",
                             tmp_path / "a.pt", "--z-context", "1"))
    assert "sees 2 neighbouring slice(s)" in line and not (tmp_path / "b.pt").exists()
    out = cli("train", *common, "--out", tmp_path / "b.pt", "--init", tmp_path / "a.pt",
              check=True)
    assert load_model(tmp_path / "b.pt").config.z_context == 2
    assert f"fine-tuning {tmp_path / 'a.pt'} at 0.3 x the learning rate" in out.stderr
    line = _error_of(cli("train", *common, "--out", tmp_path / "b.pt", "--overwrite",
                             "--init", tmp_path / "a.pt", "--absolute-intensity", "off"))
    assert "trained with it on" in line
    assert load_model(tmp_path / "b.pt").config.sees_absolute_intensity


def test_absolute_intensity_can_be_chosen_for_a_2d_image(tmp_path, cli):
    image, truth = make_blobs((40, 48))
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "strokes.tif", strokes_from_truth(truth))
    common = ["--image", tmp_path / "image.tif", "--labels", tmp_path / "strokes.tif",
              "--steps", "2"]
    cli("train", *common, "--out", tmp_path / "auto.pt", check=True)
    cli("train", *common, "--out", tmp_path / "on.pt", "--absolute-intensity", "on",
            check=True)
    assert not load_model(tmp_path / "auto.pt").config.sees_absolute_intensity
    assert load_model(tmp_path / "on.pt").config.sees_absolute_intensity


def test_fine_tune_and_quiet(files):
    run_cli("train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
            "--out", files / "a.pt", "--steps", "2", check=True)
    out = run_cli("train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
                  "--out", files / "b.pt", "--steps", "3", "--init", files / "a.pt", "-q",
                  check=True)
    assert out.stderr == "" and out.stdout == ""
    assert load_model(files / "b.pt").metadata["steps"] == 5


def test_a_log_file_gets_a_few_progress_lines_not_one_per_step(files, cli):
    """Written to a file (a batch job's log), the bar is redrawn every few seconds."""
    out = cli("train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
              "--out", files / "m.pt", "--steps", "40", check=True)
    assert "trained 40 steps" in out.stderr
    assert out.stderr.count("\r") <= 4, out.stderr  # was one redraw per step
    assert "100%" in out.stderr  # the last state is still written when the bar closes


def test_seconds_budget(files):
    run_cli("train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
            "--out", files / "m.pt", "--seconds", "1", "--preset", "cpu-small", check=True)
    assert load_model(files / "m.pt").metadata["seconds"] >= 1.0


def test_a_stack_stops_at_its_step_limit_and_says_so(tmp_path, cli):
    """A budget on a Z stack ends at --stack-steps (default: the widget's pause, 500), and
    the user is told why it stopped early and how to lift the limit."""
    image, truth = make_blobs((40, 48))
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([image] * 3), photometric="minisblack")
    strokes = np.zeros((3, 40, 48), np.uint8)
    strokes[1] = strokes_from_truth(truth)
    tifffile.imwrite(tmp_path / "strokes.tif", strokes, photometric="minisblack")
    common = ["train", "--image", tmp_path / "stack.tif", "--labels", tmp_path / "strokes.tif",
              "--axes", "ZYX", "--steps", "6", "--preset", "cpu-small"]
    out = cli(*common, "--out", tmp_path / "a.pt", "--stack-steps", "4", check=True)
    assert "at most 4 steps on a Z stack" in out.stderr
    assert "stopped at 4 steps, the limit for Z stacks" in out.stderr
    assert "trained 4 steps" in out.stderr
    assert load_model(tmp_path / "a.pt").metadata["steps"] == 4
    out = cli(*common, "--out", tmp_path / "b.pt", "--stack-steps", "0", check=True)
    assert "trained 6 steps" in out.stderr and "limit" not in out.stderr
    out = cli(*common, "--out", tmp_path / "c.pt", check=True)  # 6 is under 500
    assert "trained 6 steps" in out.stderr and "stopped at" not in out.stderr
    line = _error_of(cli(*common, "--out", tmp_path / "d.pt", "--stack-steps", "-1"))
    assert "--stack-steps must be 0 (no limit) or more" in line
    assert not (tmp_path / "d.pt").exists()


def _error_of(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_user_errors_get_one_line(files, cli):
    img = files / "img.tif"
    tifffile.imwrite(files / "none.tif", np.zeros((64, 80), np.uint8))
    tifffile.imwrite(files / "one.tif", np.ones((64, 80), np.uint8))
    tifffile.imwrite(files / "small.tif", np.ones((10, 10), np.uint8))
    objects = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) // 40  # one id per object
    tifffile.imwrite(files / "objects.tif", objects)
    (files / "junk.pt").write_bytes(b"junk")
    train = ["train", "--image", img, "--out", files / "m.pt", "--steps", "1", "--labels"]
    cases = {
        "file not found": [*train, files / "missing.tif"],
        "no painted pixels": [*train, files / "none.tif"],
        "only one class": [*train, files / "one.tif"],
        "same pixels": [*train, files / "small.tif"],
        "the labels go up to 127 (127 different values)": [*train, files / "objects.tif"],
        "not a readable model file": ["predict", "--model", files / "junk.pt", "--image", img,
                                      "--out", files / "o.tif"],
        "model file not found": ["predict", "--model", files / "nope.pt", "--image", img,
                                 "--out", files / "o.tif"],
        # refused before the model is even read, not after minutes of predicting
        "--seed-depth must be > 0, got 0.0": [
            "predict", "--model", files / "junk.pt", "--image", img, "--out", files / "o.tif",
            "--instances", files / "i.tif", "--seed-depth", "0"],
        "--min-size must be >= 0, got -1": [
            "predict", "--model", files / "junk.pt", "--image", img, "--out", files / "o.tif",
            "--min-size", "-1"],
    }
    for expected, args in cases.items():
        assert expected in _error_of(cli(*args)), expected
    assert not (files / "m.pt").exists() and not (files / "o.tif").exists()


def test_outputs_are_not_overwritten_without_consent(files):
    (files / "m.pt").write_bytes(b"precious")
    args = ["train", "--image", files / "img.tif", "--labels", files / "strokes.tif",
            "--out", files / "m.pt", "--steps", "1"]
    assert "already exists" in _error_of(run_cli(*args))
    assert (files / "m.pt").read_bytes() == b"precious"
    run_cli(*args, "--overwrite", check=True)
    assert load_model(files / "m.pt").metadata["steps"] == 1


def test_help_lists_commands():
    out = run_cli("--help", check=True).stdout
    for word in ("train", "predict", "demo"):
        assert word in out


# (file axes, how the file is written, --axes to pass or None, training mode)
LAYOUTS = [
    ("ZYX", "plain", None, "2d"),  # no metadata: guessed, and said so
    ("ZYX", "imagej", None, "3d"),
    ("TYX", "imagej", None, "auto"),
    ("TZYX", "imagej", None, "auto"),
    ("CYX", "imagej", None, "auto"),
    ("ZCYX", "imagej", None, "2d"),
    ("TYX", "plain", "TYX", "auto"),  # a time-lapse the guess would call ZYX
]


@pytest.mark.parametrize(("axes", "written", "given", "mode"), LAYOUTS)
def test_each_layout_trains_and_predicts(tmp_path, axes, written, given, mode, cli):
    sizes = {"T": 3, "Z": 4, "C": 2, "Y": 40, "X": 48}
    blobs = [make_blobs((40, 48), seed=s) for s in range(12)]
    label_axes = axes.replace("C", "")
    label_shape = [sizes[a] for a in label_axes]
    planes = int(np.prod(label_shape[:-2]))
    image_planes = np.stack([b[0] for b in blobs[:planes]]).reshape(label_shape)
    truth = np.stack([b[1] for b in blobs[:planes]]).reshape(label_shape)
    if "C" in axes:  # the second channel is the inverted first: same information
        c = axes.index("C")
        image = np.stack([image_planes, 255 - image_planes], axis=c)
    else:
        image = image_planes
    strokes = np.zeros(label_shape, np.uint8)
    first = (0,) * (len(label_shape) - 2)
    strokes[first] = strokes_from_truth(truth[first])  # one painted plane
    imagej = written == "imagej"
    for name, data, data_axes in (("img.tif", image, axes), ("strokes.tif", strokes,
                                                                label_axes)):
        # A plain file of 3 or 4 planes would otherwise be stored as planar RGB(A).
        kwargs = ({"imagej": True, "metadata": {"axes": data_axes}} if imagej
                  else {"photometric": "minisblack"})
        tifffile.imwrite(tmp_path / name, data, **kwargs)
    axes_args = ["--axes", given] if given else []
    z_args = ["--z-context", "2"] if axes == "ZCYX" else []

    out = cli("train", "--image", tmp_path / "img.tif", "--labels",
                  tmp_path / "strokes.tif", "--out", tmp_path / "m.pt", "--steps", "3",
                  "--mode", mode, *axes_args, *z_args, check=True)
    if len(axes) > 2:
        assert f"axes {axes}" in out.stderr
    if written == "plain" and not given:
        assert "guessed" in out.stderr
    model = load_model(tmp_path / "m.pt")
    assert model.metadata["axes"] == axes
    assert model.in_channels == (2 if "C" in axes else 1)
    two_d_stack = "Z" in axes and model.config.spatial_dims == 2
    assert model.config.z_context == (2 if z_args else 1 if two_d_stack else 0)
    cli("predict", "--model", tmp_path / "m.pt", "--image", tmp_path / "img.tif",
            "--out", tmp_path / "mask.tif", "--instances", tmp_path / "objects.tif",
            "--no-tta", *axes_args, check=True)
    for name in ("mask.tif", "objects.tif"):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_imagej and tif.series[0].axes == label_axes, name
            assert tif.series[0].shape == tuple(label_shape), name


def test_a_layout_mismatch_names_the_axes(files, cli):
    tifffile.imwrite(files / "stack.tif", np.zeros((3, 64, 80), np.uint8),
                     photometric="minisblack")
    line = _error_of(cli("train", "--image", files / "stack.tif", "--labels",
                             files / "strokes.tif", "--out", files / "m.pt", "--axes", "ZYX"))
    assert "(64, 80)" in line and "axes ZYX" in line


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    """A model trained on one blob image, and a folder of three others, one of them junk."""
    root = tmp_path_factory.mktemp("batch")
    image, truth = make_blobs((64, 80))
    tifffile.imwrite(root / "train.tif", image)
    tifffile.imwrite(root / "strokes.tif", strokes_from_truth(truth))
    assert main(["train", "--image", str(root / "train.tif"), "--labels",
                 str(root / "strokes.tif"), "--out", str(root / "m.pt"), "--steps", "40",
                 "--device", "cpu", "-q"]) == 0
    folder = root / "images"
    folder.mkdir()
    for seed, name in ((1, "a.tif"), (2, "b.TIFF")):
        tifffile.imwrite(folder / name, make_blobs((48, 56), seed=seed)[0])
    (folder / "broken.tif").write_bytes(b"not a tiff")
    (folder / "notes.txt").write_text("not an image")
    return root


def test_a_folder_of_images_is_segmented_in_one_run_and_a_bad_file_does_not_stop_it(
        model_and_images, tmp_path, cli):
    root = model_and_images
    masks, objects = tmp_path / "masks", tmp_path / "objects"  # made by the command
    args = ["predict", "--model", root / "m.pt", "--image", root / "images", "--out", masks,
            "--instances", objects, "--no-tta", "--device", "cpu"]
    proc = cli(*args)
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "broken.tif is not a readable TIFF" in proc.stderr
    assert "segmented 2 of 3 images" in proc.stderr and "1 failed: broken.tif" in proc.stderr
    assert sorted(p.name for p in masks.iterdir()) == ["a.tif", "b.tif"]
    assert sorted(p.name for p in objects.iterdir()) == ["a.tif", "b.tif"]
    # each mask is what predicting that image alone gives
    for name, source in (("a.tif", "a.tif"), ("b.tif", "b.TIFF")):
        alone = tmp_path / f"alone-{name}"
        cli("predict", "--model", root / "m.pt", "--image", root / "images" / source,
            "--out", alone, "--no-tta", "--device", "cpu", check=True)
        np.testing.assert_array_equal(tifffile.imread(masks / name), tifffile.imread(alone))
        assert tifffile.imread(objects / name).max() >= 1

    # Run again: the results are not replaced without consent...
    first = cli(*args)
    assert first.returncode == 2 and "--skip-existing" in first.stderr
    assert "segmented" not in first.stderr  # refused before reading any image
    # ...and --skip-existing finishes what is left (here, only the bad file)
    again = cli(*args, "--skip-existing")
    assert "2 of 3 images already have their results" in again.stderr
    assert "segmented 0 of 1 images" in again.stderr and again.returncode == 2
    # an image stopped between its mask and its objects is done again, whole
    (objects / "b.tif").unlink()
    before = (masks / "b.tif").stat().st_mtime_ns
    finish = cli(*args, "--skip-existing")
    assert "segmented 1 of 2 images" in finish.stderr  # b, and the broken file again
    assert (objects / "b.tif").exists() and (masks / "b.tif").stat().st_mtime_ns != before
    # one image whose result exists is left alone too (a shell loop run again)
    written = (masks / "a.tif").stat().st_mtime_ns
    single = cli("predict", "--model", root / "m.pt", "--image", root / "images" / "a.tif",
                 "--out", masks / "a.tif", "--skip-existing")
    assert single.returncode == 0 and "left out" in single.stderr
    assert (masks / "a.tif").stat().st_mtime_ns == written
    # a pattern, quoted as on Windows, names the same images
    pattern = cli("predict", "--model", root / "m.pt", "--image", root / "images" / "[ab].*",
                  "--out", tmp_path / "by-pattern", "--no-tta", "--device", "cpu")
    assert pattern.returncode == 0 and "segmented 2 of 2 images" in pattern.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "by-pattern" / "a.tif"),
                                  tifffile.imread(masks / "a.tif"))


def test_batch_names_are_checked_before_any_image_is_read(model_and_images, tmp_path, cli):
    root = model_and_images
    model, images = root / "m.pt", root / "images"
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "a.tif", np.zeros((48, 56), np.uint8))
    (tmp_path / "file.tif").write_bytes(b"")
    predict = ["predict", "--model", model, "--device", "cpu", "--image"]
    cases = {
        "would both be written as a.tif": [*predict, images / "a.tif", other / "a.tif",
                                           "--out", tmp_path / "o"],
        "would replace the image": [*predict, other, "--out", other, "--overwrite"],
        "must be different ones": [*predict, images, "--out", tmp_path / "o",
                                   "--instances", tmp_path / "o"],
        "must be a folder, not a file": [*predict, images, "--out", tmp_path / "file.tif"],
        "no file matches": [*predict, images / "*.png", "--out", tmp_path / "o"],
        "no TIFF (.tif, .tiff) in folder": [*predict, tmp_path / "o2", "--out",
                                            tmp_path / "o"],
        "does not exist": [*predict, images, "--out", tmp_path / "no" / "such"],
    }
    (tmp_path / "o2").mkdir()
    for expected, args in cases.items():
        assert expected in _error_of(cli(*args)), expected
    assert not (tmp_path / "o").exists()
    assert (other / "a.tif").stat().st_size > 0  # the image is untouched


def test_ctrl_c_in_a_batch_says_where_it_stopped_and_keeps_the_results_before(
        model_and_images, tmp_path, cli, monkeypatch):
    import napari_unet.core.predict_files as predict_files

    root = model_and_images
    calls = []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return (yield from real(*args, **kwargs))

    real = predict_files.iter_predict
    monkeypatch.setattr(predict_files, "iter_predict", interrupted_on_the_second)
    masks = tmp_path / "masks"
    proc = cli("predict", "--model", root / "m.pt", "--image", root / "images" / "a.tif",
               root / "images" / "b.TIFF", "--out", masks, "--no-tta", "--device", "cpu")
    assert proc.returncode == 130
    assert "stopped at " + str(root / "images" / "b.TIFF") in proc.stderr
    assert "the 1 result(s) before it are complete" in proc.stderr
    assert sorted(p.name for p in masks.iterdir()) == ["a.tif"]


def test_training_on_several_images_learns_from_the_strokes_on_each(tmp_path, cli):
    bright, truth_a = make_blobs((64, 64), seed=1)
    dark, truth_b = make_blobs((64, 64), seed=2)
    tifffile.imwrite(tmp_path / "a.tif", bright)
    tifffile.imwrite(tmp_path / "b.tif", 255 - dark)  # the same objects, dark on bright
    tifffile.imwrite(tmp_path / "a_strokes.tif", strokes_from_truth(truth_a))
    # corrective strokes of the background only: the first image has the objects
    tifffile.imwrite(tmp_path / "b_strokes.tif", np.where(
        strokes_from_truth(truth_b) == 1, 1, 0).astype(np.uint8))
    out = cli("train", "--image", tmp_path / "a.tif", tmp_path / "b.tif", "--labels",
              tmp_path / "a_strokes.tif", tmp_path / "b_strokes.tif", "--out",
              tmp_path / "m.pt", "--steps", "3", "--device", "cpu", check=True)
    assert "(new model, 2 images)" in out.stderr
    meta = load_model(tmp_path / "m.pt").metadata
    assert meta["training_images"] == 2 and meta["painted_pixels"]["1"] == int(
        (strokes_from_truth(truth_a) == 1).sum() + (strokes_from_truth(truth_b) == 1).sum())
    wrong = cli("train", "--image", tmp_path / "a.tif", tmp_path / "b.tif", "--labels",
                tmp_path / "a_strokes.tif", "--out", tmp_path / "n.pt", "--device", "cpu")
    assert wrong.returncode == 2 and "one --labels file per --image" in wrong.stderr
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    bad = cli("train", "--image", tmp_path / "a.tif", tmp_path / "rgb.tif", "--labels",
              tmp_path / "a_strokes.tif", tmp_path / "b_strokes.tif", "--out",
              tmp_path / "n.pt", "--device", "cpu")
    assert bad.returncode == 2 and "rgb.tif: it has 3 channel(s)" in bad.stderr
    assert not (tmp_path / "n.pt").exists()
