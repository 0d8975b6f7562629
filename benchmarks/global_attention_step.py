"""Time training steps of global spatial attention (paper 2) against the vanilla CNN; pixel CNN vs N.

Arms (same backbone, batch and Adam, round-robin in one process so drift hits all equally; warm-up excluded):
vanilla CNN; GlobalAttention before the cut-off (the pixel CNN trains); GlobalAttention after the cut-off
(M cached; goal: within 1.05x of vanilla); the pixel CNN alone (forward, |M|_1, backward, Adam), its share
of the step before the cut-off. Then, for N = --n-start, 4x, 16x, ... up to --max-n, the pixel CNN's
training step and peak memory, each N in a fresh process (CPU: growth of the peak RSS over a warmed-up
baseline; CUDA: max_memory_allocated), next to the memory guard's estimate, stopping where the guard
refuses; last, the N from which the guard refuses on this device for --guard-shapes. A default run takes
about 2 minutes on 2 CPU cores. On the CPU keep P under 2^31 bytes (64x64x1: N < 131,072; 224x224x3:
N <= 3,566): beyond, oneDNN (torch 2.14) refuses its fast weight-gradient kernels ("size > INT_MAX") and
falls back to its reference one (``ONEDNN_VERBOSE=all`` shows ``ref:any``): the backward that takes 5 s
at N = 130,000 (64x64x1) did not finish in 2 minutes at N = 132,000.

    python benchmarks/global_attention_step.py --backbone resnet18 --size 64 64 --channels 1 --batch 32 \\
        --n 240 --steps 15 --max-n 15360 --json runs/global_attention_step.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything
from attnlib.engine.step_timing import Arm, time_round_robin, timed_step
from attnlib.methods.base import Classifier, Method
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig
from attnlib.models.pixel_attention import (
    PixelCNN,
    PixelMemoryError,
    check_pixel_memory,
    free_memory_bytes,
    pixel_memory_bytes,
)
from attnlib.models.registry import create_model

NUM_CLASSES = 3
VANILLA, BEFORE, AFTER, PIXEL = "vanilla CNN", "GA before cut-off", "GA after cut-off", "pixel CNN alone"


def _method_arm(method: Method, batch: dict[str, Tensor]) -> Arm:
    return lambda: method.step(batch).losses["loss"], torch.optim.Adam(method.param_groups(1e-4))


def _pixel_arm(cnn: PixelCNN, pixels: Tensor) -> Arm:
    return lambda: cnn(pixels).abs().mean(), torch.optim.Adam(cnn.parameters(), lr=1e-4)


def time_arms(args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    """Step times (s) of the four arms, interleaved round-robin, warm-up steps dropped."""
    seed_everything(0, deterministic=False)
    h, w = args.size
    images = torch.rand(args.n, args.channels, h, w)
    batch = {
        "img": torch.rand(args.batch, args.channels, h, w, device=device),
        "lab": torch.randint(0, NUM_CLASSES, (args.batch,), device=device),
    }
    config = GlobalAttentionConfig(k=args.k, cutoff_epoch=1)

    def backbone() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(args.backbone, NUM_CLASSES, in_chans=args.channels, pretrained=False)

    vanilla = Classifier(backbone()).to(device).train()
    before = GlobalAttention(backbone(), images, config).to(device).train()
    after = GlobalAttention(backbone(), images, config).to(device).train()
    arms = {
        VANILLA: _method_arm(vanilla, batch),
        BEFORE: _method_arm(before, batch),
        AFTER: _method_arm(after, batch),  # optimiser built before the freeze, as the trainer does
        PIXEL: _pixel_arm(PixelCNN(args.n, args.channels, args.k).to(device), before.pixels),
    }
    after.on_epoch_start(config.cutoff_epoch + 1)
    return time_round_robin(arms, device, args.steps, args.warmup)


def _peak_rss() -> int:
    """This process's RSS high-water mark in bytes: Linux's VmHWM, else ru_maxrss (bytes on macOS).

    Not ru_maxrss on Linux: it survives exec, so a spawned process would start from its parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _reset_peak_rss() -> int:
    """Lower the RSS high-water mark to the current RSS where Linux allows it; the mark afterwards."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _peak_rss()


def measure_pixel_cnn(n: int, c: int, h: int, w: int, k: int, device: str, repeats: int) -> dict[str, float]:
    """Median training step (s) of the pixel CNN on N random images and its peak memory (bytes).

    Meant for a fresh process. CPU: growth of the RSS high-water mark, reset after a tiny pixel CNN has
    trained (libraries and thread pools loaded); memory that the allocator reuses without growing the RSS
    goes unseen. CUDA: ``max_memory_allocated`` over what was allocated before P.
    """
    dev = torch.device(device)
    tiny = PixelCNN(2, c, k).to(dev)
    timed_step(_pixel_arm(tiny, torch.rand(1, 2 * c, h, w, device=dev)), dev)
    del tiny
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        baseline = torch.cuda.memory_allocated(dev)
    else:
        baseline = _reset_peak_rss()
    arm = _pixel_arm(PixelCNN(n, c, k).to(dev), torch.rand(1, n * c, h, w, device=dev))
    times = [timed_step(arm, dev) for _ in range(repeats + 1)][1:]
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _peak_rss()
    return {"median_s": statistics.median(times), "peak_bytes": peak - baseline}


def scaling(args: argparse.Namespace, device: torch.device) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for N = n_start * 4^i up to max_n, one fresh process each; and the guard's refusal, if any."""
    h, w = args.size
    rows: list[dict[str, Any]] = []
    n = args.n_start
    context = multiprocessing.get_context("spawn")
    while n <= args.max_n:
        try:
            estimate = check_pixel_memory(n, args.channels, h, w, args.k, device=device)
        except PixelMemoryError as refusal:
            return rows, f"N={n}: {refusal}"
        with context.Pool(1) as pool:
            measured = pool.apply(
                measure_pixel_cnn, (n, args.channels, h, w, args.k, str(device), args.scaling_repeats)
            )
        rows.append({"n": n, "estimate_bytes": estimate, **measured})
        mib = measured["peak_bytes"] / 2**20
        print(
            f"  N={n:>9,d}  step {measured['median_s'] * 1000:9.1f} ms  peak {mib:9.1f} MiB  "
            f"estimate {estimate / 2**20:9.1f} MiB  (peak/estimate {measured['peak_bytes'] / estimate:.2f})",
            flush=True,
        )
        n *= 4
    return rows, None


def guard_limit(c: int, h: int, w: int, k: int, device: torch.device) -> dict[str, Any]:
    """The smallest N the guard refuses on ``device`` now, and its message."""
    shape = f"{h}x{w}x{c}"
    free = free_memory_bytes(device)
    if free is None:
        return {"shape": shape, "refused_from_n": None, "message": f"free memory of {device} unknown"}
    fixed = pixel_memory_bytes(0, c, h, w, k, device=device)
    per_image = pixel_memory_bytes(1, c, h, w, k, device=device) - fixed  # the estimate is linear in N
    n = (free - fixed) // per_image + 1
    try:
        check_pixel_memory(n, c, h, w, k, device=device)
        message = "not refused (free memory grew meanwhile)"
    except PixelMemoryError as refusal:
        message = str(refusal)
    return {"shape": shape, "refused_from_n": n, "free_bytes": free, "message": message}


def _shape(text: str) -> tuple[int, int, int]:
    h, w, c = (int(part) for part in text.split("x"))
    return h, w, c


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=240, help="training images N stacked into P")
    parser.add_argument("--k", type=int, default=32, help="K, channels of the pixel CNN's first conv")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-start", type=int, default=60, help="first N of the scaling table")
    parser.add_argument("--max-n", type=int, default=15360, help="last N of the scaling table (0: skip it)")
    parser.add_argument("--scaling-repeats", type=int, default=3, help="timed pixel-CNN steps per N")
    parser.add_argument("--guard-shapes", nargs="*", default=["64x64x1", "224x224x3"], metavar="HxWxC")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    device = default_device(args.device)
    h, w = args.size

    times = time_arms(args, device)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"training steps ({args.backbone}, {h}x{w}x{args.channels}, batch {args.batch}, N={args.n}, "
        f"K={args.k}, {args.steps} steps, {device}, {torch.get_num_threads()} threads; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    for name, values in times.items():
        mean = statistics.mean(values)
        print(
            f"  {name:18s} median {medians[name] * 1000:8.1f} ms  mean {mean * 1000:8.1f} ms  "
            f"({medians[name] / medians[VANILLA]:.3f}x vanilla)"
        )
    after_ratio = medians[AFTER] / medians[VANILLA]
    share = medians[PIXEL] / medians[BEFORE]
    print(f"  after cut-off / vanilla = {after_ratio:.3f} (goal <= 1.05)")
    print(
        f"  pixel CNN share of the step before the cut-off: {share:.1%} timed alone, "
        f"{1 - medians[VANILLA] / medians[BEFORE]:.1%} by difference to vanilla"
    )

    print(f"\npixel CNN training step vs N ({h}x{w}x{args.channels}, K={args.k}, {device})")
    rows, refusal = scaling(args, device) if args.max_n else ([], None)
    if refusal:
        print(f"  guard refused {refusal}")

    print(f"\nmemory guard on {device} now (K={args.k})")
    limits = [guard_limit(c, gh, gw, args.k, device) for gh, gw, c in map(_shape, args.guard_shapes)]
    for limit in limits:
        print(f"  {limit['shape']}: refuses from N={limit['refused_from_n']}: {limit['message']}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "setting": {**vars(args), "json": str(args.json), "device": str(device)},
            "step_times_s": times,
            "median_s": medians,
            "after_over_vanilla": after_ratio,
            "pixel_share_before_cutoff": share,
            "scaling": rows,
            "scaling_refusal": refusal,
            "guard_limits": limits,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
