"""``attnlib data generate | verify | split``: what the data sub-commands do (their options are in
:mod:`attnlib.cli`).

The command line builds its parser from the constants below, so this module imports only the standard
library at module level; each handler imports what it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DATASETS = ("egd-cxr",)
#: Synthetic defaults: EGD-CXR (GG-CAM), the structured-image set (global spatial attention) and the
#: fine-grained set (ABN + edited maps).
GENERATORS = ("egd-cxr", "structured", "finegrained")
#: ``--cue`` values per generator (the fine-grained set always has its distractor).
CUES = {"egd-cxr": ("marker_presence", "marker_position"), "structured": ("corner",), "finegrained": ()}
#: Datasets with a manifest and a verifier (the synthetic generator and split file exist for EGD-CXR).
VERIFIABLE = ("egd-cxr", "idrid", "jaffe", "cub", "idrid-lesions", "clickme")


def generate_command(args: argparse.Namespace) -> int:
    """``attnlib data generate``: write a synthetic default dataset."""
    from attnlib.data.synthetic.defaults import synthetic_egd_cxr, synthetic_finegrained, synthetic_structured

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


def verify_command(args: argparse.Namespace) -> int:
    """``attnlib data verify``: check a local copy against its manifest; exit 1 when there are errors."""
    from attnlib.data.real.clickme import verify_clickme
    from attnlib.data.real.cub import verify_cub
    from attnlib.data.real.egd_cxr import EGDCXRPaths
    from attnlib.data.real.egd_cxr_verify import verify_egd_cxr
    from attnlib.data.real.idrid import verify_idrid
    from attnlib.data.real.idrid_lesions import verify_idrid_lesions
    from attnlib.data.real.jaffe import verify_jaffe

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


def split_command(args: argparse.Namespace) -> int:
    """``attnlib data split``: write a label-balanced split file."""
    from attnlib.data.real.egd_cxr import EGDCXRPaths, read_master_sheet
    from attnlib.data.real.manifest import MANIFEST_DIR
    from attnlib.data.splits import GG_CAM_FRACTIONS, balanced_split, save_split

    paths = EGDCXRPaths.from_root(args.root)
    sheet = read_master_sheet(paths.master_sheet)
    frame = balanced_split(sheet["dicom_id"].tolist(), sheet["label"].tolist(), args.seed, GG_CAM_FRACTIONS)
    out = args.out or MANIFEST_DIR / "splits" / f"egd_cxr_seed{args.seed}.csv"
    save_split(frame, out)
    counts = frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    print(f"wrote {out}\n{counts}")
    return 0
