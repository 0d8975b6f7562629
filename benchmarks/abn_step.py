"""Time ABN's training and fine-tuning steps against the plain ResNet, and RISE deletion/insertion vs step.

Part 1, training steps (same backbone, batch and SGD + momentum, interleaved round-robin in one process
so drift hits all arms equally; warm-up excluded): the plain ResNet with cross-entropy; ResNet + ABN with
``L_abn``; ABN fine-tuning (feature extractor frozen, ``L_abn + gamma * mean_b ||M'_b - M_b||_2``,
``attnlib.losses.abn.fine_tuning_loss``, only the branches' parameters in the optimiser).
Part 2, RISE deletion + insertion (``attnlib.evaluation.explanations.deletion_insertion``: all perturbed copies in
batches of --eval-batch) of --eval-images images at --image-size, scored by the ABN with its own map as
saliency, for each --pixel-steps value: ms per image and the number of forwards.

    python benchmarks/abn_step.py --backbone resnet18 --image-size 224 --batch-size 16 --steps 20
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything
from attnlib.engine.step_timing import Arm, synchronize, time_round_robin
from attnlib.evaluation.explanations import LogitsOnly, abn_maps, deletion_insertion
from attnlib.losses.abn import abn_loss, fine_tuning_loss
from attnlib.models.abn import branch_parameters, freeze_feature_extractor
from attnlib.models.registry import create_model

NUM_CLASSES = 10
PLAIN, ABN, FINETUNE = "ResNet + CE", "ResNet + ABN", "ABN fine-tuning"


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def time_arms(args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    """Step times (s) of the three arms, interleaved round-robin (first arm rotating), warm-up dropped."""
    size = args.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    plain = create_model(args.backbone, NUM_CLASSES, pretrained=False).to(device).train()
    abn = create_model(args.backbone, NUM_CLASSES, pretrained=False, head="abn").to(device).train()
    tuned = create_model(args.backbone, NUM_CLASSES, pretrained=False, head="abn").to(device)
    freeze_feature_extractor(tuned)
    with torch.no_grad():  # eval mode: one image through batch norm, even where the map is 1 x 1
        grid = tuned.eval()(images[:1]).predicted_map.shape[-2:]
    tuned.train()
    edited = torch.rand(args.batch_size, 1, *grid, device=device)
    arms: dict[str, Arm] = {
        PLAIN: (lambda: F.cross_entropy(plain(images), labels), _sgd(plain.parameters())),
        ABN: (lambda: abn_loss(abn(images), labels), _sgd(abn.parameters())),
        FINETUNE: (
            lambda: fine_tuning_loss(tuned(images), labels, edited, args.gamma)[0],
            _sgd(branch_parameters(tuned)),
        ),
    }
    return time_round_robin(arms, device, args.steps, args.warmup)


def time_deletion_insertion(args: argparse.Namespace, device: torch.device) -> list[dict[str, float]]:
    """Per --pixel-steps value: ms per image for deletion + insertion, points per curve, forwards."""
    size = args.image_size
    model = create_model(args.backbone, NUM_CLASSES, pretrained=False, head="abn").to(device).eval()
    images = torch.rand(args.eval_images, 3, size, size, device=device)
    saliency = abn_maps(model, images)
    scorer = LogitsOnly(model)
    deletion_insertion(scorer, images, saliency, step=size * size, batch_size=args.eval_batch)  # warm-up
    rows = []
    for step in args.pixel_steps:
        points = math.ceil(size * size / step) + 1
        synchronize(device)
        start = time.perf_counter()
        deletion_insertion(scorer, images, saliency, step=step, batch_size=args.eval_batch)
        synchronize(device)
        elapsed = time.perf_counter() - start
        rows.append({
            "step": step,
            "points": points,
            # per mode: one forward of the clean images, then the perturbed copies in batches
            "forwards": 2 * (1 + math.ceil(args.eval_images * points / args.eval_batch)),
            "images_scored_per_image": 2 * (1 + points),
            "ms_per_image": elapsed * 1000 / args.eval_images,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--steps", type=int, default=20, help="timed repetitions per arm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gamma", type=float, default=1.0, help="weight of the map term when fine-tuning")
    parser.add_argument("--pixel-steps", type=int, nargs="+", default=[224, 448, 896, 1792])
    parser.add_argument("--eval-images", type=int, default=2, help="images scored by deletion/insertion")
    parser.add_argument("--eval-batch", type=int, default=64, help="perturbed copies per forward")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = default_device(args.device)
    seed_everything(0, deterministic=False)
    size = args.image_size

    times = time_arms(args, device)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"training steps ({args.backbone}, {size}x{size}, batch {args.batch_size}, SGD, {args.steps} steps, "
        f"{device}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    for name, value in medians.items():
        mean = statistics.mean(times[name])
        print(
            f"  {name:16s} median {value * 1000:8.1f} ms/step  mean {mean * 1000:8.1f} ms"
            f"  ({value / medians[PLAIN]:.3f}x plain, {value / medians[ABN]:.3f}x ABN)"
        )

    print(
        f"\nRISE deletion + insertion per image ({args.eval_images} images, {size}x{size}, "
        f"perturbed copies in batches of {args.eval_batch}, {device})"
    )
    for row in time_deletion_insertion(args, device):
        print(
            f"  step {row['step']:5d} px: {row['points']:4d} points per curve, {row['forwards']:4d} forwards "
            f"in all ({row['images_scored_per_image']:4d} images scored per image), "
            f"{row['ms_per_image']:9.1f} ms/image"
        )


if __name__ == "__main__":
    main()
