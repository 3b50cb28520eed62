"""Benchmark: images/s of :func:`ibnb.core.train.fit` against a bare forward/backward/step loop.

    python -m ibnb.core.bench [--model cnn] [--batch-size 128] [--steps 60] [--device auto]

Both loops train the same model on the same device with the same batch size, optimiser and bf16
autocast policy; the bare loop reuses one pre-made batch, so the difference is the cost of ``fit``'s
machinery (device-side batching, metrics, schedule, progress bar) and, in the second row, of on-device
crop+flip augmentation. This is a script, not a timed test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.train import autocast, sync, build_optimizer, default_device, device_name, fit, TrainConfig


def bare_loop(model, x, y, steps: int, device) -> float:
    """Images/s of the minimal loop: forward, loss, backward, optimiser step on one resident batch."""
    opt = build_optimizer(model, TrainConfig(lr=1e-3))
    model.train()
    for i in range(steps + 5):
        if i == 5:  # warm-up steps excluded
            sync(device)
            t0 = time.perf_counter()
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * len(y) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=int, default=None, help="width knob of cnn/cnn_sa/resnet18/mlp")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = default_device() if args.device == "auto" else torch.device(args.device)
    kw = {"width": args.width} if args.width else {}
    n = args.batch_size * args.steps
    g = torch.Generator().manual_seed(0)
    data = ImageData(x=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 10, (n,), generator=g), classes=[str(i) for i in range(10)],
                     name="random", mean=(0.5,) * 3, std=(0.25,) * 3)
    x = ((data.x[: args.batch_size].float() / 255 - 0.5) / 0.25).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = data.y[: args.batch_size].to(device)
    print(f"model={args.model} {kw} batch={args.batch_size} steps/epoch={args.steps} device={device_name(device)} "
          f"threads={torch.get_num_threads()}")
    rows = {"bare": [], "fit": [], "fit+aug": []}
    for r in range(args.repeats):
        torch.manual_seed(r)
        model = create_model(args.model, **kw).to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        rows["bare"].append(bare_loop(model, x, y, args.steps, device))
        for name, aug in (("fit", "none"), ("fit+aug", "crop+flip")):
            torch.manual_seed(r)
            h = fit(create_model(args.model, **kw), data, epochs=3, batch_size=args.batch_size, augment=aug,
                    device=device, progress=False, lr=1e-3)
            rows[name].append(float(h.frame["images_per_s"].iloc[1:].max()))  # warm epochs only
    best = {k: max(v) for k, v in rows.items()}
    for k, v in best.items():
        print(f"{k:8s} {v:10.0f} images/s (best of {args.repeats})   overhead vs bare: {1 - v / best['bare']:+.1%}")


if __name__ == "__main__":
    main()
