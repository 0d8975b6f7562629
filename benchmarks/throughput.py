"""Throughput of every supervision method beside its plain backbone: images/s, step time and MFU (issue #25).

Workloads (``--methods``: names or prefixes, e.g. ``global-attention``), each at its study's batch, image size
and optimiser in the ``--profile`` (paper: meant for a GPU), every method built by its study's builder where
that is a function (GG-CAM, global attention) and by the methods' constructors otherwise:

* ``gg-cam-resnet``, ``gg-cam-effnet``: plain backbone (1 channel), CAM head + CE, GG-CAM (Eq. 9-11);
* ``global-attention-<backbone>`` for each profile backbone: plain backbone, pixel attention before the
  cut-off (the pixel CNN trains on all ``--pixel-images`` training images) and after it (M cached);
* ``abn``: plain ResNet, ABN (``L_abn``); ``gala``: plain ResNet, GALA + CE, GALA + ClickMe;
* ``benchmark``: the benchmark's plain backbone, RRR and the neural harmonizer (double backward).

Each step is the trainer's (``attnlib.engine.throughput``): the trainer's optimiser, bf16 autocast and
channels_last on CUDA (as ``TrainConfig`` says; ``--amp`` overrides, also on the CPU; ``--channels-last`` on
CUDA, where the trainer applies it), its
deterministic setting; the arms of a workload are timed round-robin so drift hits all alike. Columns: ms/step
(median), images/s, GFLOP per step (forward + backward, ``FlopCounterMode``), TFLOP/s, MFU against the card's
dense bf16 peak (``--peak-tflops`` overrides; none on the CPU), the ratios of the step and of its FLOPs to
the plain backbone's (a step ratio above the FLOP ratio is overhead, not arithmetic), and the goals: step
ratio <= 1.10, MFU >= 40 % on the ResNet-50 workloads.

    python benchmarks/throughput.py --steps 20 --csv runs/throughput.csv
    python benchmarks/throughput.py --device cpu --batch-size 4 --image-size 64 --pixel-images 16 --steps 5
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from attnlib.core.device import default_device
from attnlib.core.profiles import load_profile, load_settings
from attnlib.core.seeding import seed_everything
from attnlib.data.arrays import ArrayDataset
from attnlib.engine.throughput import (
    StepArm,
    format_table,
    measure,
    peak_tflops,
    to_frame,
)
from attnlib.engine.trainer import TrainConfig, Trainer
from attnlib.methods.abn import ABNClassifier
from attnlib.methods.base import Classifier, Method
from attnlib.methods.gala import ClickMeSupervised
from attnlib.methods.gg_cam import GGCAM
from attnlib.methods.saliency_supervision import NeuralHarmonizer, RightForRightReasons
from attnlib.models.cam import cam_grid
from attnlib.models.registry import create_model
from attnlib.papers import gg_cam
from attnlib.papers import global_attention as ga
from attnlib.papers.abn import ABNSettings
from attnlib.papers.benchmark import BenchmarkSettings
from attnlib.papers.gala import GALASettings

#: The share of the synthetic set the global-attention study trains on (its 80/20 split).
TRAIN_SHARE = 0.8
#: Classes of the benchmark's workload (its sources have 2 to 10).
BENCHMARK_CLASSES = 10


@dataclass
class Candidate:
    """A method of a workload; ``baseline``: the name of its plain backbone's arm (None: it is that arm);
    ``epoch``: passed to ``on_epoch_start`` after the optimiser is built, as the trainer does."""

    method: Method
    baseline: str | None = None
    epoch: int = 1


@dataclass(frozen=True)
class Workload:
    """One paper-profile path: its backbone, the study's batch, image size (H, W), input channels, classes and
    training configuration; ``build(size)``: its candidates by name, the plain backbone first."""

    name: str
    backbone: str
    size: tuple[int, int]
    channels: int
    classes: int
    config: TrainConfig
    build: Callable[[tuple[int, int]], dict[str, Candidate]]


def _plain(backbone: str, classes: int, channels: int = 3) -> Classifier:
    return Classifier(create_model(backbone, classes, in_chans=channels, pretrained=False))


def gg_cam_workloads(profile: str) -> list[Workload]:
    """Per family: the plain backbone (one channel), the study's CAM baseline and GG-CAM
    (``gg_cam.build_method``), at the synthetic EGD-CXR's size times the profile's scale."""
    settings = load_settings(gg_cam.GGCAMSettings, profile, "gg_cam")
    synthetic = load_profile(profile)["egd_cxr_synthetic"]
    size = (round(synthetic["rows"] * settings.scale), round(synthetic["cols"] * settings.scale))
    classes = len(gg_cam.LABELS)

    def workload(family: str, backbone: str) -> Workload:
        def build(_size: tuple[int, int]) -> dict[str, Candidate]:
            plain = f"{backbone} (plain)"
            return {
                plain: Candidate(_plain(backbone, classes, 1)),
                f"{family} (CAM head + CE)": Candidate(method(family), plain),
                f"{family}+gg-cam": Candidate(method(f"{family}+gg-cam"), plain),
            }

        def method(arm: str) -> Method:
            return gg_cam.build_method(gg_cam.Arm.parse(arm, settings), settings, classes, start=False)

        config = gg_cam.train_config(gg_cam.Arm.parse(f"{family}+gg-cam", settings), settings)
        return Workload(f"gg-cam-{family}", backbone, size, 1, classes, config, build)

    return [workload(family, backbone) for family, backbone in settings.backbones.items()]


def global_attention_workloads(profile: str, pixel_images: int | None) -> list[Workload]:
    """Per profile backbone: plain, pixel attention before the cut-off (the pixel CNN trains on N random
    training images) and after it (``global_attention.build_method``)."""
    settings = load_settings(ga.GlobalAttentionSettings, profile, "global_attention")
    synthetic = load_profile(profile)["global_attention_synthetic"]
    channels, classes = synthetic["channels"], synthetic["n_classes"]
    n = pixel_images if pixel_images is not None else round(TRAIN_SHARE * synthetic["n_images"])
    grid = settings.grid
    point = {"k": grid.k[0], "l1_weight": grid.l1_weight[0], "cutoff_epoch": settings.cutoff_epoch}
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                         plateau_patience=None)

    def workload(backbone: str) -> Workload:
        def build(size: tuple[int, int]) -> dict[str, Candidate]:
            train = ArrayDataset(torch.rand(n, channels, *size), [i % classes for i in range(n)],
                                 [str(i) for i in range(n)], [str(c) for c in range(classes)], "throughput")

            def method(variant: str) -> Method:
                return ga.build_method(ga.Arm.parse(f"{backbone}{variant}"), point, train, pretrained=False)

            plain, after = f"{backbone} (plain)", settings.cutoff_epoch + 1
            return {
                plain: Candidate(method("")),
                f"+ pixel attention (N={n})": Candidate(method("+attention"), plain),
                "+ pixel attention, after cut-off": Candidate(method("+attention"), plain, after),
            }

        size = (settings.image_size, settings.image_size)
        return Workload(f"global-attention-{backbone}", backbone, size, channels, classes, config, build)

    return [workload(backbone) for backbone in settings.backbones]


def abn_workload(profile: str) -> Workload:
    """ABN (``L_abn``, the study's first stage) beside the plain ResNet."""
    settings = load_settings(ABNSettings, profile, "abn")
    classes = load_profile(profile)["abn_synthetic"]["n_classes"]

    def build(_size: tuple[int, int]) -> dict[str, Candidate]:
        plain = f"{settings.backbone} (plain)"
        abn = ABNClassifier(create_model(settings.backbone, classes, 3, pretrained=False, head="abn"))
        return {plain: Candidate(_plain(settings.backbone, classes)), "+ ABN": Candidate(abn, plain)}

    size, config = (settings.image_size, settings.image_size), settings.train.train_config(progress=False)
    return Workload("abn", settings.backbone, size, 3, classes, config, build)


def gala_workload(profile: str) -> Workload:
    """GALA trained by CE (weight 0, the map loss still computed) and with ClickMe, beside the plain ResNet,
    built as ``GALAStudy.build_method`` builds them (a method of the study, which needs its run store)."""
    s = load_settings(GALASettings, profile, "gala")
    classes = load_profile(profile)["gala_synthetic"]["n_classes"]

    def gala(weight: float) -> ClickMeSupervised:
        model = create_model(s.backbone, classes, 3, False, head="gala", variant=s.variant)
        return ClickMeSupervised(model, weight, s.loss_variant)

    def build(_size: tuple[int, int]) -> dict[str, Candidate]:
        plain = f"{s.backbone} (plain)"
        return {plain: Candidate(_plain(s.backbone, classes)), "GALA + CE": Candidate(gala(0.0), plain),
                "GALA + ClickMe": Candidate(gala(s.map_weight), plain)}

    config = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, optimizer="sgd_nesterov", lr=s.lr,
                         weight_decay=s.weight_decay, plateau_patience=None)
    return Workload("gala", s.backbone, (s.image_size, s.image_size), 3, classes, config, build)


def benchmark_workload(profile: str) -> Workload:
    """The benchmark's input-gradient methods, RRR and the neural harmonizer, beside its plain backbone (built
    as ``AttentionBenchmark.build_method`` builds them)."""
    s = load_settings(BenchmarkSettings, profile, "benchmark")

    def build(_size: tuple[int, int]) -> dict[str, Candidate]:
        def network() -> torch.nn.Module:
            return create_model(s.backbone, BENCHMARK_CLASSES, pretrained=False)

        plain = f"{s.backbone} (plain)"
        return {
            plain: Candidate(Classifier(network())),
            "+ RRR": Candidate(RightForRightReasons(network(), s.rrr_lambda, s.rrr_threshold), plain),
            "+ harmonizer": Candidate(NeuralHarmonizer(network(), s.harmonizer_weight), plain),
        }

    config = TrainConfig(epochs=s.epochs["short"], batch_size=s.batch_size, optimizer=s.optimizer, lr=s.lr,
                         weight_decay=s.weight_decay, plateau_patience=None)
    size = (s.image_size, s.image_size)
    return Workload("benchmark", s.backbone, size, 3, BENCHMARK_CLASSES, config, build)


def workloads(profile: str, pixel_images: int | None) -> list[Workload]:
    """Every workload of ``profile``, in report order."""
    return [*gg_cam_workloads(profile), *global_attention_workloads(profile, pixel_images),
            abn_workload(profile), gala_workload(profile), benchmark_workload(profile)]


def select(available: Sequence[Workload], names: Sequence[str] | None) -> list[Workload]:
    """The workloads named, or whose name starts with ``<name>-``; all for None (ValueError for no match)."""

    def matches(workload: Workload, name: str) -> bool:
        return workload.name == name or workload.name.startswith(f"{name}-")

    if not names:
        return list(available)
    unknown = [n for n in names if not any(matches(w, n) for w in available)]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; choose from {[w.name for w in available]}")
    return [w for w in available if any(matches(w, n) for n in names)]


def training_config(workload: Workload, args: argparse.Namespace, device: torch.device) -> TrainConfig:
    """The workload's configuration with the options' batch; bf16 autocast and channels_last as the trainer
    applies them (on CUDA, as the study's configuration says) unless the options say otherwise."""
    cuda, config = device.type == "cuda", workload.config
    return replace(
        config,
        batch_size=args.batch_size or config.batch_size,
        amp=args.amp if args.amp is not None else cuda and config.amp,
        channels_last=args.channels_last if args.channels_last is not None else cuda and config.channels_last,
    )


def batch_for(workload: Workload, candidates: dict[str, Candidate], size: tuple[int, int], batch_size: int
              ) -> dict[str, Any]:
    """Random images and labels, a human map per image (``map``, ``has_map``) and, where GG-CAM trains, a gaze
    map on its CAM grid (``hmap``): every key the workload's methods read."""
    batch = {
        "img": torch.rand(batch_size, workload.channels, *size),
        "lab": torch.randint(0, workload.classes, (batch_size,)),
        "map": torch.rand(batch_size, 1, *size),
        "has_map": torch.ones(batch_size, dtype=torch.bool),
    }
    cam = next((c.method.model for c in candidates.values() if isinstance(c.method, GGCAM)), None)
    if cam is not None:
        batch["hmap"] = torch.rand(batch_size, 1, *cam_grid(cam, size))
    return batch


def step_arms(workload: Workload, config: TrainConfig, size: tuple[int, int], device: torch.device
              ) -> dict[str, StepArm]:
    """The workload's methods as trainer steps on ``device`` under ``config``: placed, their optimisers built,
    then their epoch started; one batch for all."""
    candidates = workload.build(size)
    batch = batch_for(workload, candidates, size, config.batch_size)
    trainer = Trainer(config, device, checkpoint_every=None)
    batch = trainer.to_device(batch)
    arms = {}
    for name, candidate in candidates.items():
        trainer.place(candidate.method)
        candidate.method.train()
        optimizer = trainer.optimizer(candidate.method)
        candidate.method.on_epoch_start(candidate.epoch)
        arms[name] = StepArm(candidate.method, batch, optimizer, config.amp, candidate.baseline,
                             mfu_goal=workload.backbone == "resnet50")
    return arms


def _device_words(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (f"CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, load "
            f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, torch {torch.__version__}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="paper", help="where the workloads' settings come from")
    parser.add_argument("--methods", nargs="*", default=None, metavar="WORKLOAD",
                        help="workloads (names or prefixes); default all")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="every workload's batch (default: its study's)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square side of every workload's images (default: its study's)")
    parser.add_argument("--pixel-images", type=int, default=None,
                        help="N of pixel attention (default: the profile's synthetic training set)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds before them")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on CUDA as the study's TrainConfig says, else off)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last layout on CUDA (default: the profile's); the trainer keeps NCHW on the CPU")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                        default=TrainConfig.deterministic, help="deterministic algorithms, as the trainer")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s for the MFU (default: the card's dense bf16 peak)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--steps and --batch-size must be positive, --warmup non-negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = default_device(args.device)
    chosen = select(workloads(args.profile, args.pixel_images), args.methods)
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    print(f"{device}: {_device_words(device)}; deterministic {args.deterministic}; peak {peak_source}")
    frames, missed = [], []
    for workload in chosen:
        seed_everything(0, args.deterministic)
        config = training_config(workload, args, device)
        size = (args.image_size, args.image_size) if args.image_size else workload.size
        arms = step_arms(workload, config, size, device)
        rows = measure(arms, device, args.steps, args.warmup, peak)
        layout = "channels_last" if config.channels_last else "NCHW"
        print(f"\n{workload.name}: {size[0]}x{size[1]}, {config.optimizer}, {layout}, {args.steps} steps "
              f"after {args.warmup} warm-up rounds, arms interleaved")
        print(format_table(rows))
        missed += [f"{workload.name}/{row.name}" for row in rows if False in (row.ratio_ok, row.mfu_ok)]
        frames.append(to_frame(rows).assign(workload=workload.name, height=size[0], width=size[1],
                                            layout=layout, device=str(device), peak_tflops=peak))
        del arms
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = pd.concat(frames, ignore_index=True)
    print(f"\n{len(missed)} of {len(table)} arms miss a goal" + (f": {', '.join(missed)}" if missed else ""))
    if math.isnan(peak):
        print(f"MFU not reported: {peak_source}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
