"""Time training steps: standard head + cross-entropy vs CAM layer + GG-CAM losses (Eq. 9-11).

Same backbone, same batch, same optimiser, timed round-robin in one process by ``attnlib.engine.step_timing``
so both see the same machine state. Prints the median step time of each and their ratio (goal: at most
1.05).

    python benchmarks/gg_cam_step.py --backbone resnet18 --size 128 104 --batch 16 --steps 30
"""

from __future__ import annotations

import argparse
import statistics

import torch

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything
from attnlib.engine.step_timing import Arm, time_round_robin
from attnlib.methods.base import Classifier
from attnlib.methods.gg_cam import GGCAM, GGCAMConfig
from attnlib.models.cam import cam_grid
from attnlib.models.registry import create_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 104), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = default_device(args.device)
    seed_everything(0, deterministic=False)
    standard = Classifier(create_model(args.backbone, 3, in_chans=1, pretrained=False)).to(device)
    cam_model = create_model(args.backbone, 3, in_chans=1, pretrained=False, head="cam")
    grid = cam_grid(cam_model, tuple(args.size))
    guided = GGCAM(cam_model, GGCAMConfig()).to(device)
    batch = {
        "img": torch.rand(args.batch, 1, *args.size, device=device),
        "lab": torch.randint(0, 3, (args.batch,), device=device),
        "hmap": torch.rand(args.batch, 1, *grid, device=device),
    }
    arms: dict[str, Arm] = {}
    for name, method in (("standard head + CE", standard), ("CAM layer + GG-CAM", guided)):
        method.train()
        arms[name] = (
            lambda m=method: m.step(batch).losses["loss"],
            torch.optim.Adam(method.param_groups(1e-3)),
        )
    times = time_round_robin(arms, device, args.steps, args.warmup)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, value in medians.items():
        print(f"{name:20s} median {value * 1000:8.1f} ms/step ({args.batch / value:7.1f} images/s)")
    ratio = medians["CAM layer + GG-CAM"] / medians["standard head + CE"]
    print(
        f"ratio GG-CAM / standard = {ratio:.3f} ({args.backbone}, {args.size[0]}x{args.size[1]}, "
        f"batch {args.batch}, {args.steps} steps, {device})"
    )


if __name__ == "__main__":
    main()
