"""The CUDA path, measured: what to tune and how close it gets to the card's peak.

    python benchmarks/bench_gpu.py [--write docs/benchmarks.md] [--json FILE]

Needs a CUDA GPU (``--smoke`` runs a tiny version of every section on the CPU, to check the
script itself). Sections:

1. Train pressed to first overlay, headless: the time from building the training run (as
   the widget's worker does) to the first prediction of
   :func:`~napari_unet.core.live.live_training`, in a fresh process each time: cold, after
   ``warm_up("cpu")`` (the CPU only), after :func:`~napari_unet.core.training.warm_up`
   (CPU and GPU: what the widget runs when it opens), and warm (the same run a second
   time in one process).
2. Training throughput of the ``gpu`` preset's network in a plain PyTorch loop (pre-made
   tensors, so the network alone is timed) across batch size, precision (bf16, fp16,
   fp32), memory layout (channels-last or not) and the channel layer norm's kernel (our
   eager formula or one fused ``F.layer_norm`` over the channels-last view), 2D and 3D;
   FLOPs counted with ``torch.utils.flop_counter`` against the card's dense bf16 peak.
3. Our training loop (patch sampling, augmentation, masked loss, averaging) against that
   plain loop at the same settings: how much the CPU-side sampling costs on a GPU.
4. Tiled prediction: megapixels (megavoxels) per second and peak GPU memory, 2D images up
   to 8k x 8k and 3D stacks, across tile batch sizes; then the passes the widget runs
   (Predict and the pass after Stop: :func:`~napari_unet.core.view_first.predict_view_first`,
   one window per block, plain and with test-time augmentation, whose 8 transforms go one
   window per forward pass) against the command line's ``predict`` on the same image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from napari_unet.core.config import PRESETS, ModelConfig, TileConfig
from napari_unet.core.inference import predict
from napari_unet.core.live import live_training
from napari_unet.core.sampling import IGNORE_INDEX
from napari_unet.core.training import TrainingRun, warm_up
from napari_unet.core.unet import ChannelLayerNorm, build_unet
from napari_unet.core.view_first import PredictionUpdate, predict_view_first

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _docs import publish  # noqa: E402
from _flops import peak_flops, training_step_flops  # noqa: E402
from bench_core import _sync, loop_throughput, machine  # noqa: E402

SAMPLE = HERE.parent / "sample_data"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


# -- 1. first overlay --------------------------------------------------------------------


def first_overlay_child(how: str, device_name: str) -> dict[str, float]:
    """In this (fresh) process: seconds from building the run to the first overlay."""
    device = torch.device(device_name)
    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    preset = PRESETS["gpu"]
    if how == "warm_up_cpu":
        warm_up("cpu")  # the widget's warm-up before it also started the GPU
    elif how in ("warm_up", "warm"):
        warm_up(device_name)
    times = []
    for _ in range(2 if how == "warm" else 1):
        _sync(device)
        t0 = time.perf_counter()
        cfg = replace(preset.train, max_steps=None, max_seconds=None, device=device.type,
                      seed=0)
        run = TrainingRun(image, strokes, cfg, model_config=preset.model)
        built = time.perf_counter() - t0
        live = live_training(run, refresh_s=2.0, tiles=preset.tile)
        for event in live:
            if isinstance(event, PredictionUpdate):
                break
        times.append({"seconds": time.perf_counter() - t0, "build_s": built})
        live.close()
    return times[-1]


def first_overlay(device: torch.device) -> dict[str, dict[str, float]]:
    out = {}
    for how in ("cold", "warm_up_cpu", "warm_up", "warm"):
        proc = subprocess.run(
            [sys.executable, __file__, "--first-overlay-child", how, device.type],
            capture_output=True, text=True, check=True)
        out[how] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"first overlay, {how}: {out[how]}", flush=True)
    return out


# -- 2. training throughput of the network alone -----------------------------------------


def _textbook_forward(self: ChannelLayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The channel layer norm as its formula reads: eight elementwise passes (the
    package's own until 2026-11-24, when the fused ``F.layer_norm`` replaced it)."""
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _network(model: ModelConfig, device: torch.device, layout: str, norm: str):
    net = build_unet(model).to(device)
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last if model.spatial_dims == 2
                     else torch.channels_last_3d)
    if norm == "eager":
        for module in net.modules():
            if isinstance(module, ChannelLayerNorm):
                module.forward = types.MethodType(_textbook_forward, module)
    return net


def plain_training(model: ModelConfig, patch: tuple[int, ...], batch: int, dtype: str,
                   layout: str, norm: str, device: torch.device, steps: int,
                   compile_: bool = False) -> dict[str, float]:
    """Patches/s of forward + masked CE + backward + AdamW on pre-made tensors."""
    torch.manual_seed(0)
    net = _network(model, device, layout, norm)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, foreach=True)
    step_net = torch.compile(net) if compile_ else net
    x = torch.randn(batch, model.in_channels, *patch, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if len(patch) == 2
                         else torch.channels_last_3d)
    y = torch.randint(-1, model.num_classes, (batch, *patch), device=device)
    amp = DTYPES[dtype]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = step_net(x)
        F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0, foreach=True)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - t0
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {"patches_s": steps * batch / seconds, "gib": memory, "first_steps_s": warm_s}


def training_sweep(device: torch.device, smoke: bool, quick: bool = False) -> list[dict]:
    preset = PRESETS["gpu"]
    peak, _ = peak_flops(device)
    rows = []
    flops_per_patch: dict[int, float] = {}
    grids = {
        2: {"model": preset.model,
            "patch": (64,) * 2 if smoke else (preset.train.patch_size,) * 2,
            "batches": [2] if smoke else [16, 64] if quick else [8, 16, 32, 64, 128]},
        3: {"model": replace(preset.model, spatial_dims=3),
            "patch": (16,) * 3 if smoke else (preset.train.patch_size_3d,) * 3,
            "batches": [1] if smoke else [4] if quick else [2, 4, 8]},
    }
    steps = 2 if smoke else 10
    for dims, grid in grids.items():
        model, patch = grid["model"], grid["patch"]
        flops = training_step_flops(build_unet(model).to(device), 1, patch[0])
        flops_per_patch[dims] = flops
        # (precision, layout, norm kernel, cudnn.benchmark)
        variants = [(d, lay, n, False) for d in ("bf16", "fp32")
                    for lay in ("channels_last", "contiguous") for n in ("eager", "fused")]
        if dims == 3:
            variants = [v for v in variants if v[0] == "bf16"]
            variants.append(("fp32", "channels_last", "fused", False))
        else:
            variants.append(("fp16", "channels_last", "fused", False))
        variants += [("bf16", "channels_last", n, True) for n in ("eager", "fused")]
        for batch in grid["batches"]:
            for dtype, layout, norm, autotune in variants:
                torch.backends.cudnn.benchmark = autotune
                try:
                    r = plain_training(model, patch, batch, dtype, layout, norm, device,
                                       steps if dims == 2 else max(steps // 2, 2))
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    r = {"patches_s": 0.0, "gib": float("nan"), "first_steps_s": 0.0,
                         "oom": True}
                finally:
                    torch.backends.cudnn.benchmark = False
                    if device.type == "cuda":
                        torch.cuda.empty_cache()  # the next variant starts from a clean pool
                r.update(dims=dims, patch=patch[0], batch=batch, dtype=dtype, layout=layout,
                         norm=norm + (" + cudnn.benchmark" if autotune else ""),
                         tflops=r["patches_s"] * flops / 1e12,
                         share=(r["patches_s"] * flops / peak) if peak else None)
                rows.append(r)
                print(f"{dims}D batch {batch:3d} {dtype} {layout:13s} {r['norm']:25s}: "
                      f"{r['patches_s']:8.1f} patches/s {r['tflops']:6.1f} TFLOP/s "
                      f"{r['gib']:5.1f} GiB", flush=True)
    if not (smoke or quick) and device.type == "cuda":
        # torch.compile fuses the norm and activations itself; its compile time is what a
        # user would wait for at the first Train.
        for batch in (16, 64):
            try:
                r = plain_training(preset.model, (preset.train.patch_size,) * 2, batch,
                                   "bf16", "channels_last", "fused", device, steps,
                                   compile_=True)
            except Exception as err:  # noqa: BLE001 - report and go on
                print(f"torch.compile failed: {err!r}", flush=True)
                continue
            flops = flops_per_patch[2]
            r.update(dims=2, patch=preset.train.patch_size, batch=batch, dtype="bf16",
                     layout="channels_last", norm="compiled",
                     tflops=r["patches_s"] * flops / 1e12,
                     share=(r["patches_s"] * flops / peak) if peak else None)
            rows.append(r)
            print(f"compiled batch {batch}: {r['patches_s']:.1f} patches/s, "
                  f"{r['tflops']:.1f} TFLOP/s, compile + 3 steps {r['first_steps_s']:.1f} s",
                  flush=True)
    return rows


# -- 3. our loop against the plain one ---------------------------------------------------


def loop_overhead(device: torch.device, smoke: bool) -> list[dict]:
    preset = PRESETS["gpu"]
    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    rows = []
    patch = 64 if smoke else preset.train.patch_size
    for batch in ([2] if smoke else [16, 32, 64]):
        cfg = replace(preset.train, max_steps=None, max_seconds=None, device=device.type,
                      seed=0, batch_size=batch, patch_size=patch)
        run = TrainingRun(image, strokes, cfg, model_config=preset.model)
        steps = 2 if smoke else 20
        ours = loop_throughput(run, batch, steps, device, warm_up_steps=3)
        # The CPU side alone: drawing and augmenting the patches.
        t0 = time.perf_counter()
        for _ in range(steps):
            run._sampler.sample(batch)
        sampling = steps * batch / (time.perf_counter() - t0)
        plain = plain_training(preset.model, (patch, patch), batch, "bf16", "channels_last",
                               "fused", device, steps)["patches_s"]
        rows.append({"batch": batch, "ours": ours, "plain": plain, "sampling": sampling})
        print(f"loop batch {batch}: ours {ours:.1f}, plain {plain:.1f}, sampling alone "
              f"{sampling:.1f} patches/s", flush=True)
    return rows


# -- 4. prediction -----------------------------------------------------------------------


def _timed(run: Callable[[np.ndarray], object], image: np.ndarray, warm_up_image: np.ndarray,
           device: torch.device) -> tuple[float, float]:
    """Seconds and peak GPU GiB of ``run(image)``, after ``run(warm_up_image)``."""
    run(warm_up_image)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    run(image)
    _sync(device)
    seconds = time.perf_counter() - t0
    gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return seconds, gib


def _timed_predict(model, image: np.ndarray, warm_up_image: np.ndarray, tiles: TileConfig,
                   device: torch.device, axes: str | None = None) -> tuple[float, float]:
    """Seconds and peak GPU GiB of one tiled prediction, after a warm-up on a crop."""
    return _timed(lambda img: predict(model, img, tiles, axes=axes, device=device),
                  image, warm_up_image, device)


def _timed_pass(model, image: np.ndarray, tiles: TileConfig, device: torch.device,
                how: str, tta: bool) -> tuple[float, float]:
    """Seconds and peak GPU GiB of ``predict`` or the widget's view-first pass."""
    model.network.to(device)  # predict_view_first predicts where the network is

    def run(img: np.ndarray) -> None:
        if how == "predict":
            predict(model, img, tiles, device=device, test_time_augmentation=tta)
            return
        class_map = np.zeros(img.shape, np.uint8)  # assembled, as the widget's layer
        for event in predict_view_first(model, img, tiles, test_time_augmentation=tta):
            if isinstance(event, PredictionUpdate):
                class_map[event.region] = event.class_map

    return _timed(run, image, image[:1024, :1024], device)


def prediction(device: torch.device, smoke: bool, quick: bool = False) -> list[dict]:
    preset = PRESETS["gpu"]
    rows = []
    image = tifffile.imread(SAMPLE / "nuclei2d.tif")
    strokes = tifffile.imread(SAMPLE / "nuclei2d_strokes.tif")
    cfg = replace(preset.train, max_steps=1, device=device.type, patch_size=64)
    model = TrainingRun(image, strokes, cfg, model_config=preset.model).run_to_end().model
    sides = [256] if smoke else [4096, 8192] if quick else [2048, 4096, 8192]
    for side in sides:
        big = np.tile(image, (side // 512 + 1, side // 512 + 1))[:side, :side]
        for tile_batch in ([1] if smoke else [1, 4] if quick else [1, 4, 8]):
            tiles = replace(preset.tile, batch_size=tile_batch,
                            tile_size=128 if smoke else preset.tile.tile_size)
            seconds, gib = _timed_predict(model, big, big[:1024, :1024], tiles, device)
            rows.append({"dims": 2, "shape": f"{side} x {side}", "tile_batch": tile_batch,
                         "mega_s": big.size / 1e6 / seconds, "seconds": seconds, "gib": gib})
            print(f"predict {side}^2 tile batch {tile_batch}: {rows[-1]['mega_s']:.1f} MP/s, "
                  f"{gib:.2f} GiB", flush=True)
    # The widget's passes against predict, at the preset's tiles: does one window per
    # forward pass (the view-first blocks, and each of the 8 transforms of test-time
    # augmentation) leave the GPU idle?
    side = 256 if smoke else 4096
    big = np.tile(image, (side // 512 + 1, side // 512 + 1))[:side, :side]
    tiles = preset.tile  # in the smoke run the image is one window
    for how in ("predict", "view first"):
        for tta in (False, True):
            seconds, gib = _timed_pass(model, big, tiles, device, how, tta)
            rows.append({"dims": 2, "shape": f"{side} x {side}", "how": how, "tta": tta,
                         "tile_batch": tiles.batch_size, "mega_s": big.size / 1e6 / seconds,
                         "seconds": seconds, "gib": gib})
            print(f"{how}{' + TTA' if tta else ''} {side}^2: {rows[-1]['mega_s']:.1f} MP/s, "
                  f"{gib:.2f} GiB", flush=True)
    # 3D: a 3D model on stacks of growing size.
    model3 = replace(preset.model, spatial_dims=3)
    volume = np.stack([image] * 64)  # 64 x 512 x 512
    labels = np.zeros(volume.shape, np.uint8)
    labels[32] = strokes
    cfg3 = replace(preset.train, max_steps=1, device=device.type, patch_size_3d=16,
                   batch_size=1)
    model_3d = TrainingRun(volume, labels, cfg3, axes="ZYX", mode="3d",
                           model_config=model3).run_to_end().model
    shapes = [(16, 64, 64)] if smoke else [(64, 512, 512), (128, 1024, 1024)]
    for shape in shapes:
        vol = np.tile(volume, (shape[0] // 64 + 1, shape[1] // 512 + 1, shape[2] // 512 + 1))
        vol = np.ascontiguousarray(vol[: shape[0], : shape[1], : shape[2]])
        for tile_batch in ([1] if smoke else [1] if quick else [1, 2, 4]):
            tiles = replace(preset.tile, batch_size=tile_batch,
                            tile_size_3d=(16, 64, 64) if smoke else preset.tile.tile_size_3d)
            seconds, gib = _timed_predict(model_3d, vol, vol[:16], tiles, device, axes="ZYX")
            rows.append({"dims": 3, "shape": " x ".join(map(str, shape)),
                         "tile_batch": tile_batch, "mega_s": vol.size / 1e6 / seconds,
                         "seconds": seconds, "gib": gib})
            print(f"predict {shape} tile batch {tile_batch}: {rows[-1]['mega_s']:.1f} "
                  f"Mvox/s, {gib:.2f} GiB", flush=True)
    return rows


# -- report ------------------------------------------------------------------------------


def report(results: dict, device: torch.device, command: str) -> str:
    _, how = peak_flops(device)
    fo = results["first_overlay"]
    lines = [f"Measured on: {machine()}, {time.strftime('%Y-%m-%d')}, with "
             f"`{command}`. Peak: " + how + ".", "",
             "| Train pressed -> first overlay (headless, `live_training`, sample image, "
             "preset `gpu`) | seconds | of which building the run |", "|---|---|---|",
             f"| fresh process (CUDA starts on the first step) | {fo['cold']['seconds']:.2f} | "
             f"{fo['cold']['build_s']:.2f} |",
             f"| after `warm_up(\"cpu\")` (a tiny step on the CPU only) | "
             f"{fo['warm_up_cpu']['seconds']:.2f} | {fo['warm_up_cpu']['build_s']:.2f} |",
             f"| after `warm_up()` (CPU and GPU; what the widget runs when it opens) | "
             f"{fo['warm_up']['seconds']:.2f} | {fo['warm_up']['build_s']:.2f} |",
             f"| second run in the same process | {fo['warm']['seconds']:.2f} | "
             f"{fo['warm']['build_s']:.2f} |", "",
             "Training, network alone (plain loop, pre-made tensors, AdamW, clipping), "
             "patches/s (TFLOP/s, share of peak, peak GiB):", "",
             "| model, patch | batch | precision | layout | norm kernel | patches/s | "
             "TFLOP/s | share of peak | GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["training"]:
        share = f"{r['share']:.1%}" if r.get("share") is not None else "-"
        size = f"{r['dims']}D, {r['patch']}" + ("²" if r["dims"] == 2 else "³")
        if r.get("oom"):
            lines.append(f"| {size} | {r['batch']} | {r['dtype']} | {r['layout']} | "
                         f"{r['norm']} | out of memory | | | |")
            continue
        lines.append(f"| {size} | {r['batch']} | {r['dtype']} | {r['layout']} | {r['norm']} "
                     f"| {r['patches_s']:.0f} | {r['tflops']:.1f} | {share} | "
                     f"{r['gib']:.1f} |")
    lines += ["", "Our training loop against the plain loop (2D, bf16, channels-last), "
              "patches/s:", "", "| batch | ours | plain | ratio | patch sampling alone (CPU) |",
              "|---|---|---|---|---|"]
    for r in results["loop"]:
        lines.append(f"| {r['batch']} | {r['ours']:.0f} | {r['plain']:.0f} | "
                     f"{r['ours'] / r['plain']:.2f} | {r['sampling']:.0f} |")
    lines += ["", "Tiled prediction (preset `gpu` tiles, the model after one step):", "",
              "| image | how | tiles per pass | MP/s or Mvox/s | seconds | peak GPU GiB |",
              "|---|---|---|---|---|---|"]
    for r in results["prediction"]:
        how = r.get("how", "predict") + (" + test-time augmentation" if r.get("tta") else "")
        lines.append(f"| {r['dims']}D {r['shape']} | {how} | {r['tile_batch']} | "
                     f"{r['mega_s']:.1f} | {r['seconds']:.2f} | {r['gib']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path, help="update this markdown file between markers")
    parser.add_argument("--json", type=Path, help="also store the raw figures here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, on the CPU")
    parser.add_argument("--quick", action="store_true",
                        help="fewer batch sizes and images (about 4 min instead of 6)")
    parser.add_argument("--sections", nargs="+",
                        default=["first_overlay", "training", "loop", "prediction"])
    parser.add_argument("--first-overlay-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_overlay_child:
        print(json.dumps(first_overlay_child(*args.first_overlay_child)))
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU (or --smoke to check the script on the CPU)")
        return 1
    device = torch.device("cpu" if args.smoke else "cuda")
    results: dict = {"machine": machine()}
    sections = {"first_overlay": lambda: first_overlay(device),
                "training": lambda: training_sweep(device, args.smoke, args.quick),
                "loop": lambda: loop_overhead(device, args.smoke),
                "prediction": lambda: prediction(device, args.smoke, args.quick)}
    for name in args.sections:
        t0 = time.perf_counter()
        results[name] = sections[name]()
        print(f"== {name} took {time.perf_counter() - t0:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    if set(sections) <= set(results):
        command = "python benchmarks/bench_gpu.py" + (" --quick" if args.quick else "")
        publish(report(results, device, command), args.write, "bench_gpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
