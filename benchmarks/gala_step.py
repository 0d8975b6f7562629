"""Time GALA-ResNet's training step with and without the ClickMe map loss, against the plain ResNet.

Arms (same backbone, batch and SGD with Nesterov momentum, interleaved round-robin in one process so
drift hits all arms equally; warm-up excluded; on CUDA under bf16 autocast and channels_last, as the
trainer runs them): the plain ResNet with cross-entropy; GALA-ResNet (``create_model("gala_<backbone>")``,
the paper's GALA block in every block of layer3) with cross-entropy; the same GALA-ResNet with
``CE + 6 * ClickMe map loss`` (paper variant, ``forward_with_volumes`` + ``clickme_loss``; human maps of
the input's size, random); the map loss alone: forward and backward of ``6 * clickme_map_loss`` on
attention volumes captured once from a GALA forward (detached leaves, so only the loss's own work is
timed, not the network's forward and backward), its share of the GALA + ClickMe step.
Goal (issue #9): the map loss adds at most 5 % to a GALA step (GALA + ClickMe / GALA <= 1.05).

    python benchmarks/gala_step.py --backbone resnet50 --batch-size 32 --image-size 224 --steps 20
    OMP_NUM_THREADS=1 python benchmarks/gala_step.py --backbone resnet18 --batch-size 4 --image-size 64 \\
        --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything
from attnlib.engine.step_timing import Arm, time_round_robin
from attnlib.losses.clickme import PAPER_WEIGHT, clickme_loss, clickme_map_loss
from attnlib.models.gala import forward_with_volumes
from attnlib.models.registry import create_model

NUM_CLASSES = 10
PLAIN, GALA, CLICKME, MAP_LOSS = "ResNet + CE", "GALA + CE", "GALA + CE + ClickMe", "map loss alone"


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True)


def _model(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)  # same initial weights for the parts the models share
    model = create_model(name, NUM_CLASSES, pretrained=False).to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _map_loss_arm(volumes: list[Tensor], human: Tensor) -> Arm:
    """Forward + backward of the weighted map term on ``volumes`` (leaves; their gradients reset first)."""

    def loss() -> Tensor:
        for volume in volumes:
            volume.grad = None
        return PAPER_WEIGHT * clickme_map_loss(volumes, human)

    return loss, None


def time_arms(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, list[float]], list[Tensor]]:
    """Step times (s) of the four arms, interleaved round-robin, warm-up dropped; and the captured volumes."""
    amp = device.type == "cuda"
    size = args.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    if amp:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    human = torch.rand(args.batch_size, 1, size, size, device=device)
    plain = _model(args.backbone, device)
    gala = _model(f"gala_{args.backbone}", device)
    guided = _model(f"gala_{args.backbone}", device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        _, captured = forward_with_volumes(guided, images)  # the dtype and layout of a training step's
    volumes = [volume.detach().requires_grad_() for volume in captured]

    def clickme() -> Tensor:
        logits, attention = forward_with_volumes(guided, images)
        return clickme_loss(logits, labels, attention, human, weight=PAPER_WEIGHT)[0]

    arms: dict[str, Arm] = {
        PLAIN: (lambda: F.cross_entropy(plain(images), labels), _sgd(plain.parameters())),
        GALA: (lambda: F.cross_entropy(gala(images), labels), _sgd(gala.parameters())),
        CLICKME: (clickme, _sgd(guided.parameters())),
        MAP_LOSS: _map_loss_arm(volumes, human),
    }
    return time_round_robin(arms, device, args.steps, args.warmup, amp=amp), volumes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50", help="resnet18, resnet34 or resnet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="timed repetitions per arm")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive, --warmup non-negative")
    device = default_device(args.device)
    seed_everything(0, deterministic=False)
    size = args.image_size

    times, volumes = time_arms(args, device)
    medians = {name: statistics.median(values) for name, values in times.items()}
    precision = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
    shapes = sorted({"x".join(map(str, volume.shape[1:])) for volume in volumes})
    print(
        f"training steps ({args.backbone}, {size}x{size}, batch {args.batch_size}, SGD Nesterov, "
        f"{args.steps} steps, {device}, {precision}, {torch.get_num_threads()} threads; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"  ClickMe: weight {PAPER_WEIGHT:g} on {len(volumes)} GALA volumes of {', '.join(shapes)}")
    for name, values in times.items():
        print(
            f"  {name:20s} median {medians[name] * 1000:8.1f} ms/step  "
            f"mean {statistics.mean(values) * 1000:8.1f} ms  ({medians[name] / medians[PLAIN]:.3f}x plain, "
            f"{medians[name] / medians[GALA]:.3f}x GALA)"
        )
    print(f"  GALA / plain = {medians[GALA] / medians[PLAIN]:.3f}")
    print(f"  GALA + ClickMe / GALA = {medians[CLICKME] / medians[GALA]:.3f} (goal <= 1.05)")
    print(
        f"  map loss share of the GALA + ClickMe step: {medians[MAP_LOSS] / medians[CLICKME]:.1%} timed alone, "
        f"{1 - medians[GALA] / medians[CLICKME]:.1%} by difference to GALA"
    )


if __name__ == "__main__":
    main()
