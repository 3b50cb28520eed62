"""Benchmark: ``fit`` against a bare training loop per precision and memory layout, and the machine's matmul peak.

    python -m ibnb.bench [--model cnn] [--width 8] [--batch-size 128] [--steps 30] [--device auto]

For each fast path (fp32 contiguous, fp32 channels-last, bf16 autocast + channels-last) both loops train the same
model on the same device with the same batch size and optimiser; the bare loop reuses one pre-made batch, so the
difference is the cost of ``fit``'s machinery (device-side batching, metrics, schedule). Each row reports images/s,
achieved GFLOP/s (training FLOPs per image counted with ``torch.utils.flop_counter``: forward + backward) and the
overhead of ``fit``; :func:`matmul_peak` measures the bf16 and fp32 matrix-multiply rate the rows compare against.
This is a script, not a timed test: timings depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.precision import channels_last_ok, is_conv_net
from ibnb.core.train import (FastPath, autocast, build_optimizer, default_device, device_name, fit, sync, using,
                             TrainConfig)

#: the layouts/precisions compared: (label, precision, channels_last)
PATHS = (("fp32", "fp32", False), ("fp32+channels_last", "fp32", True), ("bf16+channels_last", "bf16", True))


def bare_loop(model, x, y, steps: int, device, path: FastPath | None = None) -> float:
    """Images/s of the minimal loop: forward, loss, backward, optimiser step on one resident batch (5 untimed
    warm-up steps), under ``path`` (default: the CUDA/CPU default of :func:`ibnb.core.train.autocast`)."""
    opt = build_optimizer(model, TrainConfig(lr=1e-3))
    model.train()
    if path is not None and path.channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = path.bf16 if path is not None else None
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            t0 = time.perf_counter()
        with autocast(device, bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * len(y) / (time.perf_counter() - t0)


def training_flops_per_image(model, input_shape, device, num_classes: int = 10) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by ``torch.utils.flop_counter``."""
    x = torch.randn(2, *input_shape, device=device)
    y = torch.randint(0, num_classes, (2,), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def matmul_peak(device, n: int = 2048, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a square matrix product in fp32 and bf16 on ``device`` (best of ``repeats``). The size doubles
    from 256 up to ``n`` while one product takes under 0.2 s, so a CPU without bf16 units (where bf16 is
    emulated and 10-50x slower) is measured in seconds, not minutes."""
    device = torch.device(device)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        size, rate = 256, 0.0
        while True:
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            best = float("inf")
            for _ in range(repeats + 1):
                sync(device)
                t0 = time.perf_counter()
                a @ b
                sync(device)
                best = min(best, time.perf_counter() - t0)
            rate = max(rate, 2 * size ** 3 / best / 1e9)
            if size >= n or best > 0.2:
                break
            size *= 2
        out[name] = rate
    return out


def random_data(n: int, shape=(3, 32, 32), num_classes: int = 10) -> ImageData:
    """``n`` random uint8 images with random labels (what a throughput measurement needs)."""
    g = torch.Generator().manual_seed(0)
    return ImageData(x=torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, num_classes, (n,), generator=g), classes=[str(i) for i in range(num_classes)],
                     name="random", mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


def compare(model_name: str, model_kw: dict | None = None, *, batch_size: int = 128, steps: int = 30,
            repeats: int = 2, device=None, paths=PATHS, input_shape=(3, 32, 32)) -> list[dict]:
    """One row per fast path: bare-loop and ``fit`` images/s (best of ``repeats``, measured back to back),
    GFLOP/s of each and ``fit``'s overhead. Channels-last rows are left out for a model whose convolutions fail
    :func:`ibnb.core.precision.channels_last_ok` on this machine, and for models without convolutions."""
    device = torch.device(device) if device is not None else default_device()
    kw = dict(model_kw or {})
    data = random_data(batch_size * steps, input_shape)
    loader_x = ((data.x[:batch_size].float() / 255 - 0.5) / 0.25).to(device)
    y = data.y[:batch_size].to(device)
    flops = training_flops_per_image(create_model(model_name, **kw).to(device), input_shape, device)
    rows = []
    probe = create_model(model_name, **kw)
    layout_ok = is_conv_net(probe) and channels_last_ok(probe, input_shape)  # the layout is a no-op without convs
    for label, precision, channels_last in paths:
        if channels_last and not layout_ok:  # a conv of this model gets wrong gradients (and can stall) in that layout
            continue
        path = FastPath(precision == "bf16", channels_last)
        bare, fitted = [], []
        for r in range(repeats):
            torch.manual_seed(r)
            with using(path):
                bare.append(bare_loop(create_model(model_name, **kw).to(device), loader_x, y, steps, device, path))
            torch.manual_seed(r)
            h = fit(create_model(model_name, **kw), data, epochs=2, batch_size=batch_size, device=device,
                    progress=False, lr=1e-3, precision=precision, channels_last=channels_last)
            fitted.append(float(h.frame["images_per_s"].iloc[-1]))  # the warm (second) epoch
        b, f = max(bare), max(fitted)
        rows.append({"model": model_name, "model_kw": kw, "path": label, "batch_size": batch_size,
                     "train_gflop_per_image": flops / 1e9, "bare_images_per_s": b, "fit_images_per_s": f,
                     "bare_gflop_per_s": b * flops / 1e9, "fit_gflop_per_s": f * flops / 1e9,
                     "fit_overhead": 1 - f / b, "device": device_name(device), "threads": torch.get_num_threads()})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=int, default=None, help="width knob of cnn/cnn_sa/resnet18/mlp")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--paths", default="all", help="comma-separated subset of: " + ", ".join(p[0] for p in PATHS))
    args = ap.parse_args(argv)
    device = default_device() if args.device == "auto" else torch.device(args.device)
    paths = PATHS if args.paths == "all" else [p for p in PATHS if p[0] in args.paths.split(",")]
    peak = matmul_peak(device)
    print(f"device={device_name(device)} threads={torch.get_num_threads()}  matmul peak (n=2048): "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    kw = {"width": args.width} if args.width else {}
    for r in compare(args.model, kw, batch_size=args.batch_size, steps=args.steps, repeats=args.repeats,
                     device=device, paths=paths):
        ref = peak["bf16" if "bf16" in r["path"] else "fp32"]
        print(f"{args.model} {kw} {r['path']:20s} bare {r['bare_images_per_s']:8.0f} img/s  fit "
              f"{r['fit_images_per_s']:8.0f} img/s  {r['fit_gflop_per_s']:7.1f} GFLOP/s ({r['fit_gflop_per_s'] / ref:.0%} "
              f"of the matmul peak)  fit overhead {r['fit_overhead']:+.1%}")


if __name__ == "__main__":
    main()
