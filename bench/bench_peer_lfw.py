"""Peer comparison: this project's evaluator vs face_recognition (dlib) on LFW View 1 DevTest, in one run.

Both backends score the same pairs through the same evaluator (faceid.eval.evaluator): the same image list, face
choice (detection closest to the image centre), fold assignment and metrics; each with its own detector,
alignment and network. Neither uses the embedding cache unless --cache is given, so images/s is measured.

This project's model here: whatever --model/--weights names; by default the stand-in
../shared/models/pins90_scratch_irv1_fp16.pt (InceptionResnetV1 trained from scratch on 90 people, crop
aligned5), because the VGGFace2 weights cannot be downloaded offline.

Needs the peer installed (not a project dependency):
    pip install dlib-bin face-recognition-models && pip install --no-deps face_recognition

Usage: .venv/bin/python bench/bench_peer_lfw.py [--limit N] [--threads 1] [--out-dir faceid_data/bench_peer]

--open-set: open-set 1:N on every image under --images instead (faceid/eval/open_set.py): people with >= 2
images enrol, the others are strangers; FNIR at FPIR 1e-3 / 1e-2 and rank-1 per gallery size for both
backends on the same enrolment and galleries, one DET plot; with --calibration, the app's thresholds too.
  .venv/bin/python bench/bench_peer_lfw.py --open-set --cache faceid_data/lfw_cache.sqlite --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faceid.core.errors import run_cli  # noqa: E402
from faceid.eval.embed_cache import EmbedCache  # noqa: E402
from faceid.eval.evaluator import load_faceid_backend  # noqa: E402
from faceid.eval.pairs import load_pairs_dataset  # noqa: E402
from faceid.eval.report import format_summary  # noqa: E402
from faceid.eval.verification_run import evaluate_dataset  # noqa: E402

LFW = ROOT.parent / "shared/data/lfw"
STAND_IN = ROOT.parent / "shared/models/pins90_scratch_irv1_fp16.pt"


def table(reports: dict[str, dict]) -> str:
    """Side-by-side results, one column per backend."""
    rows = [
        (
            "accuracy (10-fold, ± SEM)",
            lambda r: f"{100 * r['metrics']['accuracy']:.2f} ± {100 * r['metrics']['accuracy_sem']:.2f}%",
        ),
        ("ROC AUC", lambda r: f"{r['metrics']['auc']:.4f}"),
        ("EER", lambda r: f"{100 * r['metrics']['eer']:.2f}%"),
        ("TAR @ FAR=1e-3", lambda r: f"{100 * r['metrics']['tar@far=0.001']:.2f}%"),
        ("TAR @ FAR=1e-2", lambda r: f"{100 * r['metrics']['tar@far=0.01']:.2f}%"),
        ("mean fold threshold", lambda r: f"{r['metrics']['accuracy_threshold']:.4f}"),
        ("detector misses", lambda r: f"{r['detector']['misses']} / {r['dataset']['unique_images']}"),
        ("images/s", lambda r: f"{r['speed']['images_per_s']:.2f}"),
    ]
    names = list(reports)
    w = max(20, *(len(n) for n in names))
    lines = [
        f"| {'':<22} | " + " | ".join(f"{n:<{w}}" for n in names) + " |",
        "|" + "-" * 24 + "|" + "|".join("-" * (w + 2) for _ in names) + "|",
    ]
    lines += [f"| {label:<22} | " + " | ".join(f"{fn(reports[n]):<{w}}" for n in names) + " |" for label, fn in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=str(LFW / "pairsDevTest.txt"), help="LFW pairs file (default: View 1 DevTest).")
    p.add_argument("--images", default=str(LFW / "images"), help="LFW image root.")
    p.add_argument("--limit", type=int, default=None, help="first N/2 same + N/2 different pairs (default: all).")
    p.add_argument("--model", default=None, help="faceid checkpoint (default: --weights).")
    p.add_argument("--weights", default=str(STAND_IN), help="backbone weights (default: the stand-in).")
    p.add_argument("--crop", default="aligned5", help="crop style for --weights (default: aligned5).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    p.add_argument("--cache", default=None, help="embedding cache to use for both (default: none, to time them).")
    p.add_argument("--out-dir", default="faceid_data/bench_peer", help="report JSON + ROC PNG folder.")
    p.add_argument("--open-set", action="store_true", help="1:N on every image under --images (default: pairs).")
    p.add_argument(
        "--calibration",
        default=None,
        help="--open-set: calibration table for --weights (evaluate_model.py --calibrate), so the app's "
        "per-gallery-size threshold is measured too (default: none)",
    )
    p.add_argument(
        "--gallery-sizes", default="10,100,1000", help="--open-set: sizes besides 'all' (default: 10,100,1000)"
    )
    p.add_argument("--draws", type=int, default=5, help="--open-set: random galleries per size (default: 5)")
    args = p.parse_args()

    import torch

    from bench.peer_face_recognition import FaceRecognitionBackend
    from faceid.eval.report import write_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    peer = FaceRecognitionBackend()  # first: a missing install fails before anything slow
    ours = load_faceid_backend(
        model=args.model,
        weights=None if args.model else args.weights,
        crop=None if args.model else args.crop,
        device=args.device,
        batch_size=args.batch_size,
        calibration=args.calibration,
    )
    if args.open_set:
        from faceid.eval.open_set import format_identification, run_identification

        cache = EmbedCache(args.cache) if args.cache else None
        try:
            sizes = tuple(int(v) for v in args.gallery_sizes.split(","))
            report = run_identification(
                [ours, peer],
                args.images,
                args.out_dir,
                cache,
                sizes=sizes,
                draws=args.draws,
                batch_size=args.batch_size,
            )
        finally:
            if cache:
                cache.close()
        print(format_identification(report))
        return 0
    dataset = load_pairs_dataset(args.pairs, args.images, limit=args.limit)
    cache = EmbedCache(args.cache) if args.cache else None
    reports, curves = {}, {}
    try:
        for label, backend in ((f"faceid ({Path(ours.embedder.source).name})", ours), ("face_recognition", peer)):
            reports[label], curves[label] = evaluate_dataset(backend, dataset, cache, args.batch_size)
    finally:
        if cache:
            cache.close()
    combined = {"pairs_file": args.pairs, "torch_threads": torch.get_num_threads(), "backends": reports}
    write_outputs(combined, curves, args.out_dir, f"peer_{dataset.name}")
    for label, report in reports.items():
        print(f"\n== {label}\n{format_summary(report)}")
    print(
        f"\nLFW {dataset.describe['header']} {Path(args.pairs).name}: {len(dataset.labels)} pairs, "
        f"{len(dataset.items)} images; this project's model: {ours.embedder.source} "
        f"(crop {ours.embedder.spec.crop}, flip on); peer: {peer.describe()['model']}"
    )
    print(table(reports))
    print(f"wrote {combined['outputs']['report_json']} and {combined['outputs']['roc_png']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
