"""``attnlib data generate | verify | split``: the data sub-commands of the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from attnlib.data.clickme import verify_clickme
from attnlib.data.cub import verify_cub
from attnlib.data.defaults import synthetic_egd_cxr, synthetic_finegrained, synthetic_structured
from attnlib.data.egd_cxr import EGDCXRPaths, read_master_sheet
from attnlib.data.idrid import verify_idrid
from attnlib.data.idrid_lesions import verify_idrid_lesions
from attnlib.data.jaffe import verify_jaffe
from attnlib.data.manifest import MANIFEST_DIR, verify_egd_cxr
from attnlib.data.splits import GG_CAM_FRACTIONS, balanced_split, save_split

DATASETS = ("egd-cxr",)
#: Synthetic defaults: EGD-CXR (GG-CAM), the structured-image set (global spatial attention) and the
#: fine-grained set (ABN + edited maps).
GENERATORS = ("egd-cxr", "structured", "finegrained")
#: ``--cue`` values per generator (the fine-grained set always has its distractor).
CUES = {"egd-cxr": ("marker_presence", "marker_position"), "structured": ("corner",), "finegrained": ()}
#: Datasets with a manifest and a verifier (the synthetic generator and split file exist for EGD-CXR).
VERIFIABLE = ("egd-cxr", "idrid", "jaffe", "cub", "idrid-lesions", "clickme")


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` with its sub-commands to the top-level parser."""
    data = sub.add_parser("data", help="generate, verify and split datasets")
    cmds = data.add_subparsers(dest="data_command", required=True)

    gen = cmds.add_parser("generate", help="write the synthetic default dataset in the real layout")
    gen.add_argument("dataset", choices=GENERATORS)
    gen.add_argument(
        "--profile", default=None, help="smoke | quick | paper (default: $ATTNLIB_PROFILE or quick)"
    )
    gen.add_argument("--out", type=Path, default=None, help="parent folder (default: <home>/data/synthetic)")
    gen.add_argument("--n-images", type=int, default=None)
    gen.add_argument("--evidence-strength", type=float, default=None)
    gen.add_argument(
        "--cue", choices=sorted({c for cues in CUES.values() for c in cues}), default=None,
        help="egd-cxr: marker_presence | marker_position; structured: corner; finegrained: none (its distractor "
        "is a generator knob)",
    )
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(handler=_generate)

    ver = cmds.add_parser("verify", help="check a local copy against data_manifests/ and list every problem")
    ver.add_argument("dataset", choices=VERIFIABLE)
    ver.add_argument(
        "--root", type=Path, required=True,
        help="egd-cxr: the EGD-CXR folder or one with egd-cxr/ and mimic-cxr/; idrid, idrid-lesions: the "
        "unpacked IDRiD folder; jaffe: the TIFFs' folder or its parent (with jaffe/); cub: the folder with "
        "images/, lists/ and annotations-mat/; clickme: a folder of .npz or TFRecord files, or one TFRecord "
        "file",
    )
    ver.add_argument(
        "--mimic-root", type=Path, default=None, help="egd-cxr: MIMIC-CXR root (default: <root>/mimic-cxr)"
    )
    ver.add_argument(
        "--bubbles", type=Path, default=None, help="cub: a bubbles CSV (image,worker,x,y,radius) to check"
    )
    ver.add_argument(
        "--readme", type=Path, default=None,
        help="jaffe: the README with the ratings (default: a README* in the TIFFs' folder or its parent)",
    )
    ver.add_argument(
        "--deep", action="store_true",
        help="also decode every image (and compare mask sizes; clickme: read and decode every record)",
    )
    ver.set_defaults(handler=_verify)

    spl = cmds.add_parser("split", help="write a label-balanced 70/10/20 split file")
    spl.add_argument("dataset", choices=DATASETS)
    spl.add_argument("--root", type=Path, required=True)
    spl.add_argument("--seed", type=int, default=0)
    spl.add_argument(
        "--out", type=Path, default=None, help="default: data_manifests/splits/egd_cxr_seed<seed>.csv"
    )
    spl.set_defaults(handler=_split)


def _generate(args: argparse.Namespace) -> int:
    if args.cue is not None and args.cue not in CUES[args.dataset]:
        raise SystemExit(f"--cue {args.cue} does not apply to {args.dataset}; choose from {CUES[args.dataset]}")
    knobs = {
        k: v
        for k, v in {
            "n_images": args.n_images,
            "evidence_strength": args.evidence_strength,
            "cue": (args.cue is not None) if args.dataset == "structured" else args.cue,
            "seed": args.seed,
        }.items()
        if v is not None and not (k == "cue" and v is False)
    }
    start = time.perf_counter()
    generate = {"egd-cxr": synthetic_egd_cxr, "structured": synthetic_structured,
                "finegrained": synthetic_finegrained}[args.dataset]
    out = generate(args.profile, root=args.out, **knobs)
    print(f"synthetic {args.dataset} ready at {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.bubbles is not None and args.dataset != "cub":
        raise SystemExit(f"--bubbles applies to cub only, not {args.dataset}")
    if args.readme is not None and args.dataset != "jaffe":
        raise SystemExit(f"--readme applies to jaffe only, not {args.dataset}")
    where: Path = args.root
    counts: dict[str, int | float] = {}
    if args.dataset == "egd-cxr":
        paths = EGDCXRPaths.from_root(args.root, args.mimic_root)
        where, problems = paths.egd_root, verify_egd_cxr(paths, deep=args.deep)
    elif args.dataset == "idrid":
        problems = verify_idrid(args.root, deep=args.deep)
    elif args.dataset == "jaffe":
        problems = verify_jaffe(args.root, deep=args.deep, readme=args.readme)
    elif args.dataset == "cub":
        counts, problems = verify_cub(args.root, args.bubbles, deep=args.deep)
    elif args.dataset == "clickme":
        counts, problems = verify_clickme(args.root, deep=args.deep)
    else:
        counts, problems = verify_idrid_lesions(args.root, deep=args.deep)
    for name, value in counts.items():
        print(f"{name}: {value}")
    for problem in sorted(problems, key=lambda p: p.severity == "note"):  # what was not checked comes last
        print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    print(f"{where}: {errors} errors, {warnings} warnings")
    return 1 if errors else 0


def _split(args: argparse.Namespace) -> int:
    paths = EGDCXRPaths.from_root(args.root)
    sheet = read_master_sheet(paths.master_sheet)
    frame = balanced_split(sheet["dicom_id"].tolist(), sheet["label"].tolist(), args.seed, GG_CAM_FRACTIONS)
    out = args.out or MANIFEST_DIR / "splits" / f"egd_cxr_seed{args.seed}.csv"
    save_split(frame, out)
    counts = frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    print(f"wrote {out}\n{counts}")
    return 0
