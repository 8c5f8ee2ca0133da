"""Training-step throughput: whaleid's runner step against a bare timm + torch loop, side by side.

    python -m tools.bench.train_step [--model resnet18] [--size 128] [--batch 32] [--steps 12] [--rounds 3]

Both train the same modules (timm backbone, gem_bn neck, arcface_focal loss) on the same in-memory
batches with Adam; whaleid's side is ``core.training.loop.train_epoch`` on accelerate-prepared objects with
its LR schedule, the bare side a plain ``for`` loop. Rounds alternate (ours, bare, ours, ...) so
both see the same machine state; the median images/s of each and their ratio are printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset


def build_modules(model_name: str, classes: int, channels_last: bool = False):
    from core.model import EmbeddingModel
    from core.training.loop import TrainStep
    from plugins.backbones.timm_backbone import TimmBackbone
    from plugins.losses.arcface_focal import ArcFaceFocalLoss
    from plugins.necks.gem_bn import GemBnNeck

    backbone = TimmBackbone(model_name)
    model = EmbeddingModel(backbone, GemBnNeck(backbone.num_features, 256))
    return TrainStep(model, ArcFaceFocalLoss(256, classes), channels_last=channels_last)


def bare_loop(trainer, loader, steps: int) -> float:
    optimizer = torch.optim.Adam(trainer.parameters(), lr=3e-4, weight_decay=1e-6)
    trainer.train()
    started = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if step >= steps:
            break
        loss = trainer.loss(trainer.model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def ours_loop(trainer, loader, steps: int) -> float:
    from accelerate import Accelerator

    from core.training.loop import lr_lambda, train_epoch

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = torch.optim.Adam(trainer.parameters(), lr=3e-4, weight_decay=1e-6)
    trainer, optimizer, loader = accelerator.prepare(trainer, optimizer, loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1, steps, 0, 10.0, 3e-4, 1e-7))
    started = time.perf_counter()
    train_epoch(trainer, loader, optimizer, scheduler, accelerator, steps)
    return time.perf_counter() - started


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.train_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=128, help="square image side")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per round (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--channels-last", action="store_true",
                   help="ours lays weights and batches out NHWC (train.channels_last, the runner's default); bare stays NCHW")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    classes = 200
    n = args.batch * (args.steps + 1)
    data = TensorDataset(torch.randn(n, 3, args.size, args.size), torch.randint(0, classes, (n,)))
    templates = {"ours": build_modules(args.model, classes, args.channels_last), "bare": build_modules(args.model, classes)}
    results = {"ours": [], "bare": []}
    for _ in range(args.rounds):
        for name, loop in (("ours", ours_loop), ("bare", bare_loop)):
            loader = DataLoader(data, batch_size=args.batch, shuffle=False, drop_last=True)
            trainer = copy.deepcopy(templates[name])
            seconds = loop(trainer, loader, args.steps + 1)
            results[name].append(args.batch * (args.steps + 1) / seconds)
    ours, bare = statistics.median(results["ours"]), statistics.median(results["bare"])
    print(f"{'loop':<6}{'images/s (median)':>20}{'rounds':>40}")
    for name in ("ours", "bare"):
        print(f"{name:<6}{statistics.median(results[name]):>20.1f}{str([round(r, 1) for r in results[name]]):>40}")
    print(f"ratio ours/bare: {ours / bare:.3f}")
    print(json.dumps({"model": args.model, "size": args.size, "batch": args.batch, "threads": torch.get_num_threads(),
                      "channels_last": args.channels_last,
                      "ours_img_s": round(ours, 2), "bare_img_s": round(bare, 2), "ratio": round(ours / bare, 3)}))


if __name__ == "__main__":
    main()
