"""Core engine benchmark: our overhead against plain PyTorch, and U-Net vs random forest.

    pip install -e ".[bench]"
    python benchmarks/bench_core.py [--device cpu|cuda] [--write docs/benchmarks.md]

Prints, and with ``--write`` puts between markers in the docs:

1. Training samples/s of ``TrainingRun`` against a plain PyTorch loop (same network, same
   patch and batch size, tensors prepared in advance) in the same process.
2. Inference megapixels/s of ``predict`` (tiled, exact halo) against (a) a plain loop over
   the same tile windows and (b) one whole-image forward pass.
3. Foreground IoU on unpainted pixels of the sample image after 30 s and 60 s of training
   from the sample strokes, next to a random forest on
   ``skimage.feature.multiscale_basic_features`` (what ilastik's pixel classifier does)
   trained on the same strokes. Several seeds; mean and spread.
4. Every preset's training and prediction speed on the device, with its share of the
   device's peak (the GPU preset on a CPU, the CPU preset on a GPU: what a user who picks
   the other one gets).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from napari_unet.core.config import PRESETS, get_preset
from napari_unet.core.device import resolve_device
from napari_unet.core.inference import _pad_to_multiple, plan_tiles, predict
from napari_unet.core.metrics import foreground_iou
from napari_unet.core.sampling import IGNORE_INDEX
from napari_unet.core.training import TrainingRun
from napari_unet.core.unet import build_unet

sys.path.insert(0, str(Path(__file__).parent))
from _docs import device_suffix, mean_sd, write_block  # noqa: E402
from _flops import forward_flops, peak_flops, training_step_flops  # noqa: E402
from _forest import random_forest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loop_throughput(run: TrainingRun, batch: int, steps: int, device: torch.device,
                    warm_up_steps: int = 5) -> float:
    """Patches/s of ``run``'s own training loop over ``steps`` steps, after a warm-up."""
    gen = run.steps()
    for _ in range(warm_up_steps):
        next(gen)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(gen)
    _sync(device)
    rate = steps * batch / (time.perf_counter() - t0)
    gen.close()
    return rate


def training_throughput(device: torch.device, preset_name: str, steps: int,
                        compare: bool = True, warm_up_steps: int = 5) -> dict[str, float]:
    """Patches/s of our loop (and, with ``compare``, of a plain loop) and FLOPs per patch."""
    preset = PRESETS[preset_name]
    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    cfg = replace(preset.train, max_steps=None, device=device.type, seed=0)
    bs, ps = cfg.batch_size, cfg.patch_size

    # Ours: the full loop (sampling, augmentation, loss on painted pixels, schedule).
    run = TrainingRun(image, strokes, cfg, model_config=preset.model)
    ours = loop_throughput(run, bs, steps, device, warm_up_steps)
    step_flops = training_step_flops(build_unet(run.model.config).to(device), bs, ps)
    if not compare:
        return {"ours": ours, "flops_per_sample": step_flops / bs, "patch": ps, "batch": bs}

    # Plain PyTorch: same network shape, pre-made tensors, CE with ignore_index, AdamW.
    torch.manual_seed(0)
    net = build_unet(run.model.config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate)
    x = torch.randn(bs, 1, ps, ps, device=device)
    y = torch.randint(-1, 2, (bs, ps, ps), device=device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    for i in range(steps + 5):
        if i == 5:
            _sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(x)
        F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX).backward()
        opt.step()
    _sync(device)
    plain = steps * bs / (time.perf_counter() - t0)
    return {"ours": ours, "plain": plain, "flops_per_sample": step_flops / bs,
            "patch": ps, "batch": bs}


def inference_throughput(device: torch.device, preset_name: str, side: int,
                         compare: bool = True) -> dict[str, float]:
    """MP/s of ``predict`` on a ``side`` x ``side`` image (and, with ``compare``, of plain
    loops over the same tiles and over the whole image) and FLOPs per megapixel."""
    preset = PRESETS[preset_name]
    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    cfg = replace(preset.train, max_steps=2, device=device.type)
    model = TrainingRun(image, strokes, cfg, model_config=preset.model).run_to_end().model
    big = np.tile(image, (side // 512 + 1, side // 512 + 1))[:side, :side]
    megapixels = big.size / 1e6
    tiles = preset.tile
    predict(model, big[:512, :512], tiles, device=device)  # warm-up

    def timed(fn, repeats: int = 2) -> float:
        # The best of two: the first call of each tile shape pays for oneDNN's (or cuDNN's)
        # kernel choice. Timed once, ours came first and paid it for plain PyTorch too:
        # 0.63 of plain at 1024 px (--quick, session 23), where the 512 px warm-up had run
        # other shapes.
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return megapixels / best

    ours = timed(lambda: predict(model, big, tiles, device=device))

    net = model.network.to(device).eval()
    flops = {"flops_per_mp": _tile_flops(net, model, big, tiles.tile_size) / megapixels}
    if not compare:
        return {"ours": ours, "side": side, **flops}
    padded, windows = _windows(net, model, big, tiles.tile_size)

    # Class ids as ours takes them (max's indices): torch's CPU argmax over the class axis
    # is 30-60x slower and would measure that trap, not our overhead.
    def plain_tiles() -> None:
        with torch.inference_mode():
            for w in windows:
                x = torch.from_numpy(np.ascontiguousarray(padded[(slice(None), *w.window)]))
                net(x[None].to(device)).max(1).indices.cpu()

    def plain_whole() -> None:
        with torch.inference_mode():
            net(torch.from_numpy(padded)[None].to(device)).max(1).indices.cpu()

    return {"ours": ours, "plain_tiles": timed(plain_tiles), "plain_whole": timed(plain_whole),
            "tiles": len(windows), "side": side, **flops}


def _windows(net: torch.nn.Module, model, image: np.ndarray, tile_size: int):
    """The normalised, padded image and the tile windows ``predict`` runs over it."""
    norm = model.normalization.apply(image[np.newaxis])
    padded = _pad_to_multiple(norm, model.config.size_multiples)
    windows = plan_tiles(padded.shape[1:], tile_size, net.receptive_radius,
                         model.config.size_multiples)
    return padded, windows


def _tile_flops(net: torch.nn.Module, model, image: np.ndarray, tile_size: int) -> float:
    """FLOPs of the forward passes over the tiles actually run (halo included)."""
    _, windows = _windows(net, model, image, tile_size)
    shapes = Counter(tuple(sl.stop - sl.start for sl in w.window) for w in windows)
    return sum(n * forward_flops(net, (1, 1, *shape)) for shape, n in shapes.items())


def preset_rows(device: torch.device, measured: dict[str, tuple[dict, dict]],
                peak: float | None, quick: bool) -> list[str]:
    """A table row per preset on ``device``: training and prediction speed, share of peak.

    ``measured`` holds presets already timed (name -> training, prediction results); the
    others are timed here, our loop only, with few steps where they are slow (the GPU
    preset on a CPU takes seconds per step).
    """
    rows = ["| preset | network | training batch | training patches/s | training MP/s | "
            "training share of peak | prediction MP/s | prediction share of peak |",
            "|---|---|---|---|---|---|---|---|"]
    for name, preset in PRESETS.items():
        if name in measured:
            tr, inf = measured[name]
        else:
            slow = device.type == "cpu" and name != "cpu-small"
            steps = (2 if quick else 10) if slow else (10 if quick else 150)
            tr = training_throughput(device, name, steps, compare=False,
                                     warm_up_steps=2 if slow else 5)
            inf = inference_throughput(device, name, side=1024 if quick else 2048,
                                       compare=False)
        m = preset.model
        net = f"depth {m.depth}, {m.base_channels} channels" + (", residual" if m.residual
                                                                   else "")
        train_rate = tr["ours"] * tr["flops_per_sample"]
        infer_rate = inf["ours"] * inf["flops_per_mp"]
        rows.append(
            f"| `{name}` | {net} | {tr['batch']} x {tr['patch']}² | {tr['ours']:.1f} | "
            f"{tr['ours'] * tr['patch'] ** 2 / 1e6:.2f} | {_share(train_rate, peak)} | "
            f"{inf['ours']:.2f} ({inf['side']} px) | {_share(infer_rate, peak)} |")
        print(rows[-1], flush=True)
    return rows


def _share(achieved: float, peak: float | None) -> str:
    return f"{achieved / peak:.0%}" if peak else "peak unknown"


def random_forest_iou(
    image: np.ndarray, strokes: np.ndarray, truth: np.ndarray
) -> tuple[float, float]:
    class_map, seconds = random_forest(image, strokes)
    return foreground_iou(class_map, truth, strokes == 0), seconds


def unet_iou(image, strokes, truth, device, seconds: float, seed: int) -> dict[str, float]:
    preset = get_preset("auto", device.type)
    cfg = replace(preset.train, max_seconds=seconds, seed=seed, device=device.type)
    result = TrainingRun(image, strokes, cfg, model_config=preset.model).run_to_end()
    unpainted = strokes == 0
    t0 = time.perf_counter()
    plain = predict(result.model, image, preset.tile).class_map
    t1 = time.perf_counter()
    tta = predict(result.model, image, preset.tile, test_time_augmentation=True).class_map
    t2 = time.perf_counter()
    return {"iou": foreground_iou(plain, truth, unpainted),
            "iou_tta": foreground_iou(tta, truth, unpainted),
            "steps": result.steps, "predict_s": t1 - t0, "predict_tta_s": t2 - t1}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {threads} torch threads{gpu}; torch {torch.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="update this markdown file between markers")
    parser.add_argument("--quick", action="store_true", help="fewer steps, one seed, 10/20 s")
    args = parser.parse_args()
    device = resolve_device(args.device)
    preset = get_preset("auto", device.type).name
    lines = [f"Measured on: {machine()}, device `{device.type}`, preset `{preset}`,",
             f"{time.strftime('%Y-%m-%d')}, with `python benchmarks/bench_core.py "
             f"--device {device.type} --seeds {args.seeds}`.", ""]

    tr = training_throughput(device, preset, steps=10 if args.quick else 150)
    inf = inference_throughput(device, preset, side=1024 if args.quick else 2048)
    lines += [
        "| throughput | ours | plain PyTorch | ratio |",
        "|---|---|---|---|",
        f"| training, patches/s | {tr['ours']:.1f} | {tr['plain']:.1f} | "
        f"{tr['ours'] / tr['plain']:.2f} |",
        f"| prediction {inf['side']}x{inf['side']}, MP/s vs same {inf['tiles']} tiles | "
        f"{inf['ours']:.2f} | {inf['plain_tiles']:.2f} | "
        f"{inf['ours'] / inf['plain_tiles']:.2f} |",
        f"| prediction {inf['side']}x{inf['side']}, MP/s vs one whole-image pass | "
        f"{inf['ours']:.2f} | {inf['plain_whole']:.2f} | "
        f"{inf['ours'] / inf['plain_whole']:.2f} |",
        "",
    ]
    peak, how = peak_flops(device)
    train_flops = tr["ours"] * tr["flops_per_sample"]
    infer_flops = inf["ours"] * inf["flops_per_mp"]

    def share(achieved: float) -> str:
        return _share(achieved, peak)

    lines += [
        "| FLOPs counted with `torch.utils.flop_counter` | achieved | share of peak |",
        "|---|---|---|",
        f"| training ({tr['flops_per_sample'] / 1e9:.2f} GFLOP per patch, forward + backward)"
        f" | {train_flops / 1e9:.1f} GFLOP/s | {share(train_flops)} |",
        f"| prediction ({inf['flops_per_mp'] / 1e9:.1f} GFLOP per megapixel, halo included) | "
        f"{infer_flops / 1e9:.1f} GFLOP/s | {share(infer_flops)} |",
        "", f"Peak: {how}.", "",
    ]
    print("\n".join(lines), flush=True)
    lines += [f"Every preset on this device (2D; the table above is `{preset}`, timed again "
              "only where missing: our loop, no plain one):", ""]
    lines += preset_rows(device, {preset: (tr, inf)}, peak, args.quick)
    lines.append("")

    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    truth = tifffile.imread(SAMPLE / "nuclei2d_truth.tif")
    rf_iou, rf_s = random_forest_iou(image, strokes, truth)
    budgets = (10.0, 20.0) if args.quick else (30.0, 60.0)
    seeds = range(1 if args.quick else args.seeds)
    rows = ["| method | training | prediction (512x512) | foreground IoU, unpainted pixels "
            "(mean ± sd, min) |",
            "|---|---|---|---|",
            f"| random forest, multiscale filter features | {rf_s:.1f} s, fit + predict "
            f"| (included) | {rf_iou:.3f} |"]

    def summary(values: list[float]) -> str:
        return f"{mean_sd(values)}, min {min(values):.3f}"

    for budget in budgets:
        runs = []
        for seed in seeds:
            r = unet_iou(image, strokes, truth, device, budget, seed)
            print(f"U-Net {budget:.0f} s seed {seed}: IoU {r['iou']:.3f}, with TTA "
                  f"{r['iou_tta']:.3f} ({r['steps']} steps)", flush=True)
            runs.append(r)
        n = f"({len(runs)} seeds)"
        steps = statistics.mean(r["steps"] for r in runs)
        rows.append(f"| U-Net `{preset}` | {budget:.0f} s, {steps:.0f} steps | "
                    f"{statistics.mean(r['predict_s'] for r in runs):.2f} s | "
                    f"{summary([r['iou'] for r in runs])} {n} |")
        tta_s = statistics.mean(r["predict_tta_s"] for r in runs)
        rows.append(f"| U-Net `{preset}` + test-time augmentation | {budget:.0f} s, "
                    f"{steps:.0f} steps | {tta_s:.2f} s | "
                    f"{summary([r['iou_tta'] for r in runs])} {n} |")
    lines += rows
    text = "\n".join(lines)
    print("\n".join(rows))
    if args.write:
        write_block(args.write, f"bench_core{device_suffix(device.type)}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
