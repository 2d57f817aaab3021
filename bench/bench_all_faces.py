"""``identify --all-faces`` speed and memory: faces/s on a folder of LFW View 1 photos and on a multi-face clip, at
1 and 2 threads, from process start to answer (what a user waits for), and the peak memory over 10,000 photos.

In the same run, as the baseline: the same work done the plain way in one process (each photo detected on its
own, each face embedded on its own: no batching) against this project's `FaceFinder` (photos of one size
detected as one MTCNN batch, all faces of a chunk embedded as one batch), both on the same photos with the same
weights. face_recognition's CLI (``face_recognition known/ unknown/``), the optional peer, is timed on the same
folder when it is installed; it is not in requirements.txt, and the run says when it was not measured.

The gallery: three LFW people enrolled with ``enroll`` from photos not in the timed folder. The stand-in weights
are used (timing does not depend on them).

    .venv/bin/python bench/bench_all_faces.py [--photos 200] [--clip-frames 150] [--memory-photos 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("FACEID_SHARED_DATA", REPO.parent / "shared" / "data"))
STAND_IN = (
    Path(os.environ.get("FACEID_SHARED_MODELS", REPO.parent / "shared" / "models")) / "pins90_scratch_irv1_fp16.pt"
)
ENROLLED = ("George_W_Bush", "Colin_Powell", "Tony_Blair")


def model_options(threads: int) -> list[str]:
    return ["--weights", str(STAND_IN), "--crop", "aligned5", "--offline", "--no-preview", "--threads", str(threads)]


def lfw_photos(count: int, skip: set[str]) -> list[Path]:
    """The first image of each LFW person in name order (people in `skip` left out), `count` of them."""
    people = sorted(p for p in (SHARED / "lfw" / "images").iterdir() if p.name not in skip)
    return [sorted(p.iterdir())[0] for p in people[:count]]


def link_folder(folder: Path, photos: list[Path], total: int) -> Path:
    """`total` links to `photos` (reused in turn) in a new folder."""
    folder.mkdir(parents=True)
    for i in range(total):
        os.symlink(photos[i % len(photos)], folder / f"{i:05d}.jpg")
    return folder


def app(*argv: str) -> tuple[float, str, int]:
    """The real program once: (seconds from process start to answer, its stdout, its own peak RSS in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPO / "faceid_app.py"), *argv], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"faceid_app.py {' '.join(argv)} failed: {err.read()[-1500:]}")
        return seconds, out.read(), usage.ru_maxrss // 1024  # KB on Linux


def in_process(photos: list[Path], threads: int) -> dict:
    """faces/s of the plain per-photo, per-face loop vs FaceFinder's batches, same photos, alternating runs."""
    import torch

    from faceid.app.faces import FaceFinder
    from faceid.app.quality import QualityThresholds, assess
    from faceid.core.decode import read_image_file
    from faceid.model.embedder import load_embedder

    torch.set_num_threads(threads)
    finder = FaceFinder(load_embedder(weights=STAND_IN, crop="aligned5", download=False), QualityThresholds())
    pipe, limits = finder.pipeline, finder.limits
    frames = [read_image_file(p) for p in photos]

    def plain() -> int:
        faces = 0
        for frame in frames:
            for det in pipe.detector.detect(frame):
                if assess(frame, det, limits).ok:
                    pipe.embed_crops([pipe.crop(frame, det)])
                faces += 1
        return faces

    def batched() -> int:
        return sum(len(found) for i in range(0, len(frames), 8) for found in finder.find(frames[i : i + 8]))

    times: dict[str, list[float]] = {"plain": [], "batched": []}
    counts = {}
    for _ in range(2):
        for name, fn in (("plain", plain), ("batched", batched)):
            start = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: counts[name] / min(t) for name, t in times.items()} | {"faces": counts["batched"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200, help="LFW photos in the timed folder (default: 200)")
    parser.add_argument(
        "--clip-frames", type=int, default=150, help="frames of hamilton_short.mp4 timed (default: 150)"
    )
    parser.add_argument(
        "--memory-photos", type=int, default=10_000, help="photos (links, reused) for the memory run; 0 skips it"
    )
    parser.add_argument(
        "--memory-json-photos",
        type=int,
        default=2_000,
        help="photos for the --json memory run, whose one object keeps every row (default: 2000; 0 skips it)",
    )
    parser.add_argument("--memory-only", action="store_true", help="only the memory runs (default: everything)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    args = parser.parse_args()
    if not STAND_IN.is_file() or not (SHARED / "lfw").is_dir():
        raise SystemExit(f"needs the shared data and stand-in weights ({SHARED}, {STAND_IN})")
    work = Path(tempfile.mkdtemp(prefix="bench_all_faces."))
    try:
        known = work / "known"
        for person in ENROLLED:
            (known / person).mkdir(parents=True)
            for photo in sorted((SHARED / "lfw" / "images" / person).iterdir())[1:6]:
                os.symlink(photo, known / person / photo.name)
        gallery = ["--data-dir", str(work / "gallery")]
        app(*gallery, *model_options(2), "enroll", str(known), "--json", "--quiet")
        # the peak of a run on one photo: what the program needs before any rows (model, detector, gallery)
        _, _, base_peak = app(*gallery, *model_options(2), "--source", str(photos_for_base := lfw_photos(1, set())[0]),
                              "identify", "--all-faces", "--json", "--quiet")  # fmt: skip
        print(f"peak RSS of one photo ({photos_for_base.name}), 2 threads: {base_peak} MB")
        photos = lfw_photos(args.photos, skip=set())
        folder = link_folder(work / "lfw", photos, len(photos))
        if not args.memory_only:
            speed(args, work, gallery, photos, folder, known)
        if args.memory_photos or args.memory_json_photos:
            memory(args, work, gallery, photos)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def speed(args, work: Path, gallery: list[str], photos: list[Path], folder: Path, known: Path) -> None:
    """faces/s: the program on the folder and the clip, in-process plain vs batched, the peer if installed."""
    clip = SHARED / "videos" / "hamilton_short.mp4"
    print(f"# identify --all-faces, stand-in weights, gallery of {len(ENROLLED)} people; process start to answer")
    print("| source | threads | faces | seconds | faces/s | photos or frames/s | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        for what, source, extra in (
            (f"{len(photos)} LFW photos", folder, []),
            (f"hamilton_short.mp4, {args.clip_frames} frames", clip, ["--max-frames", str(args.clip_frames)]),
        ):
            out = work / f"rows_{threads}_{source.name}.jsonl"
            seconds, text, peak = app(
                *gallery, *model_options(threads), "--source", str(source), *extra, "identify", "--all-faces",
                "--per-frame", "--jsonl", str(out), "--json", "--quiet",
            )  # fmt: skip
            s = json.loads(text)["summary"]
            print(
                f"| {what} | {threads} | {s['faces']} | {seconds:.1f} | {s['faces'] / seconds:.1f} | "
                f"{s['pictures'] / seconds:.1f} | {peak} MB |"
            )
    print("\n# in one process, the same photos: plain per-photo, per-face loop vs FaceFinder's batches")
    print("| threads | plain faces/s | batched faces/s | batched / plain |")
    print("|---|---|---|---|")
    for threads in args.threads:
        r = in_process(photos[: min(len(photos), 80)], threads)
        print(f"| {threads} | {r['plain']:.1f} | {r['batched']:.1f} | {r['batched'] / r['plain']:.2f}x |")
    try:
        import face_recognition  # noqa: F401

        peer = shutil.which("face_recognition")
    except ImportError:
        peer = None
    if peer is None:
        print("\nface_recognition's CLI: not installed here, not measured.")
    else:
        start = time.perf_counter()
        subprocess.run([peer, "--cpus", "1", str(known), str(folder)], capture_output=True, check=True)
        print(f"\nface_recognition CLI on the same folder, 1 CPU: {time.perf_counter() - start:.1f} s")


def memory(args, work: Path, gallery: list[str], photos: list[Path]) -> None:
    """Peak memory over many photos (links to the same ones, reused), rows to a file vs rows kept for --json."""
    total = max(args.memory_photos, args.memory_json_photos)
    many = link_folder(work / "many", photos, total)
    print(f"\n# memory over up to {total:,} photos (the {len(photos)} above, reused), 2 threads")
    print("| output | faces | seconds | faces/s | peak RSS |")
    print("|---|---|---|---|---|")
    for label, mode, count in (
        ("--jsonl FILE (rows not kept)", ["--jsonl", str(work / "many.jsonl")], args.memory_photos),
        ("--json (rows kept for the one object)", ["--json"], args.memory_json_photos),
    ):
        if not count:
            continue
        seconds, text, peak = app(
            *gallery, *model_options(2), "--source", str(many), "--max-frames", str(count),
            "identify", "--all-faces", *mode, "--quiet",
        )  # fmt: skip
        rows = (work / "many.jsonl").read_text().splitlines() if "--jsonl" in mode else []
        faces = len(rows) if "--jsonl" in mode else json.loads(text)["summary"]["faces"]
        print(f"| {label}, {count:,} photos | {faces:,} | {seconds:.0f} | {faces / seconds:.1f} | {peak} MB |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
