"""Benchmark what a user of the subcommands waits for: a new process from start to answer, today vs now.

    .venv/bin/python bench/bench_cold_start.py                          # 1k, 100k, 1M templates
    .venv/bin/python bench/bench_cold_start.py --sizes 1000 --repeats 5  # quick
    .venv/bin/python bench/bench_cold_start.py --onnx /tmp/m.onnx --repeats 5  # torch vs the torch-free ONNX path

"today" is the app at --baseline-rev (default: main before the index followed writes, issue 23), extracted
with `git archive` into --work-dir and run from there; "now" is this checkout. Both run in the same
session, alternating, as subprocesses (`python faceid_app.py ...`), timed from process start to exit:
  list       `list --json` (smallest size only: it prints everyone)
  verify     `--source IMAGE verify --name "Probe Person"` (one image: detect, embed, 1:1 + closest other)
  identify   `--source IMAGE identify` (one image: detect, embed, 1:N over the whole gallery)
  register   `--source NEWCOMER register --name Newcomer --samples 1` (a write: a new person)
  identify after register   the identify right after it (today: the whole index rebuilt; now: appended to)
  delete     `delete --name Newcomer` (a write: the person goes)
  identify after delete     the identify right after it (today: rebuilt; now: a tombstone)
  model      a process that only imports the app and loads the detector + embedder (the model's own load
             time, which the goal adds: "identify at 1M within 1 s plus the model's load time")
  search (gallery only)     a process that opens the gallery and searches the probe's template, no model: the
             gallery's own share of identify, without the model-load noise of a busy machine; also right after
             `add one` (Gallery.add_templates of one person) and `delete one` (Gallery.delete), each its own process
and, for "now", the first identify with no search index on disk (the one-off build of a gallery's index).

Galleries: n-1 synthetic L2-normalised templates plus "Probe Person", whose template is the real embedding
of IMAGE, added in bulk with `Gallery.add_templates` (not n registrations) under the model's fingerprint,
cached in --work-dir between runs. The baseline gets a copy converted to its schema (version 1).
The OS page cache is warm (files were just written/read); nothing else is cached between processes.

With --onnx FILE (an export_model.py export of --weights, with its detector files beside it) it instead compares
the runtimes on the smallest gallery, alternating in one run: `python -c "import onnxruntime, cv2, numpy"` (the
floor: what any ONNX program pays to start), `verify` and `identify` with `--model FILE` (onnxruntime, no torch
imported), and the same with `--weights` (torch: facenet-pytorch's MTCNN and the torch network).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceid.gallery.records import DB_NAME, INDEX_NAME  # noqa: E402
from faceid.gallery.store import Gallery  # noqa: E402
from faceid.model.embeddings import normalize_rows  # noqa: E402

SHARED = REPO.parent / "shared"
PROBE_NAME = "Probe Person"
NEWCOMER = "Newcomer"
BASELINE_REV = "451d2cf"  # main before the index followed writes (issue 23); 7ff565a: before the saved index
CHUNK = 100_000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 100_000, 1_000_000],
        help="gallery sizes in templates (default: 1000 100000 1000000)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="runs per command and version; medians are reported (default: 3)"
    )
    p.add_argument("--baseline-rev", default=BASELINE_REV, help=f"git revision of 'today' (default: {BASELINE_REV})")
    p.add_argument("--no-baseline", action="store_true", help="measure this checkout only")
    p.add_argument(
        "--work-dir",
        default=str(Path(tempfile.gettempdir()) / "faceid-cold-start"),
        help="where galleries and the baseline tree are kept between runs (default: $TMPDIR/faceid-cold-start)",
    )
    p.add_argument(
        "--image",
        default=str(SHARED / "data/photos/face_recognition/obama.jpg"),
        help="the probe image (default: ../shared/data/photos/face_recognition/obama.jpg)",
    )
    p.add_argument(
        "--weights",
        default=str(SHARED / "models/pins90_scratch_irv1_fp16.pt"),
        help="backbone weights both versions load (default: the stand-in weights)",
    )
    p.add_argument("--crop", default="aligned5", help="crop style for --weights (default: aligned5)")
    p.add_argument(
        "--onnx", help="an export of --weights (export_model.py): compare the ONNX path with torch's (see above)"
    )
    p.add_argument(
        "--newcomer",
        default=str(SHARED / "data/photos/face_recognition/biden.jpg"),
        help="the photo registered and deleted between identifies (default: ../shared/.../biden.jpg)",
    )
    p.add_argument(
        "--gallery-only",
        action="store_true",
        help="time only the gallery-only commands (search, add one, delete one: no model per process)",
    )
    p.add_argument("--json-out", help="also write the results to this JSON file")
    return p.parse_args()


def probe_template(args) -> tuple[np.ndarray, str]:
    """The probe image's embedding and the model's fingerprint, with this checkout's pipeline."""
    from faceid.app.camera import open_source
    from faceid.model.embedder import load_embedder
    from faceid.model.face import FacePipeline

    embedder = load_embedder(weights=args.weights, crop=args.crop, device="cpu", download=False)
    with open_source(args.image) as src:
        frame = next(iter(src))
    result = FacePipeline(embedder).analyze(frame)
    if result.embedding is None:
        sys.exit(f"no face found in {args.image}")
    return result.embedding, embedder.fingerprint


def build_gallery(path: Path, n: int, probe: np.ndarray, fingerprint: str) -> None:
    """n-1 random unit templates + the probe person, in bulk; reused when already there with this content."""
    stamp = path / "bench_stamp.json"
    want = {"n": n, "fingerprint": fingerprint, "probe": [round(float(v), 6) for v in probe[:4]]}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(n)
    t0 = time.perf_counter()
    with Gallery.open(path) as g:
        for start in range(0, n - 1, CHUNK):
            count = min(CHUNK, n - 1 - start)
            block = normalize_rows(rng.standard_normal((count, 512), dtype=np.float32))
            g.add_templates([f"person {i:07d}" for i in range(start, start + count)], block, fingerprint)
        g.add_templates([PROBE_NAME], probe[None], fingerprint)
    stamp.write_text(json.dumps(want))
    print(f"built a gallery of {n:,} templates in {time.perf_counter() - t0:.1f} s ({path})", flush=True)


def baseline_copy(current: Path, path: Path, schema1: bool) -> None:
    """The same gallery for the baseline (its own copy: the two versions' index files differ), as schema 1
    (no index version, no fingerprint index) when the baseline predates schema 2."""
    stamp = current / "bench_stamp.json"
    if (path / "bench_stamp.json").is_file() and (path / "bench_stamp.json").read_text() == stamp.read_text():
        return
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    (path / "samples").mkdir(mode=0o700)
    shutil.copy2(current / DB_NAME, path / DB_NAME)
    if schema1:
        with sqlite3.connect(path / DB_NAME) as conn:
            conn.execute("DELETE FROM meta WHERE key = 'index_version'")
            conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
            conn.execute("DROP INDEX IF EXISTS templates_fingerprint")
        conn.close()
    shutil.copy2(stamp, path / "bench_stamp.json")


def extract_baseline(rev: str, dest: Path) -> Path:
    if not (dest / "faceid_app.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


GALLERY_ONLY = """
import json, sys
import numpy as np
from faceid.gallery.store import Gallery
data, op, probe, fingerprint = sys.argv[1:]
q = np.load(probe)
with Gallery.open(data) as g:
    if op == "search":
        best = g.identify(q, fingerprint)[0]
        print(json.dumps({"identified": best.name, "score": best.score}))
    elif op == "add":
        g.add_templates(["Newcomer API"], -q[None], fingerprint)
        print("{}")
    else:
        g.delete("Newcomer API")
        print("{}")
"""


def timed(tree: Path, argv: list[str]) -> tuple[float, int, dict | None]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(out[-1]) if out else None
    except json.JSONDecodeError:
        answer = None
    if proc.returncode not in (0, 1) or answer is None:
        raise SystemExit(f"{' '.join(argv)} in {tree} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return seconds, proc.returncode, answer


def main() -> int:
    args = parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    probe, fingerprint = probe_template(args)
    if args.onnx:
        return compare_runtimes(args, work, probe, fingerprint)
    probe_file = work / "probe.npy"
    np.save(probe_file, probe.astype(np.float32))
    trees = {"now": REPO}
    if not args.no_baseline:
        trees["today"] = extract_baseline(args.baseline_rev, work / f"baseline-{args.baseline_rev}")
    model = [
        "--weights",
        args.weights,
        "--crop",
        args.crop,
        "--offline",
        "--no-preview",
        "--probe-samples",
        "1",
        "--source",
        args.image,
    ]
    load_only = [
        "-c",
        "import sys; from faceid.app.session import load_model; from faceid.app.cli import build_parser; from faceid.model.face import "
        "FacePipeline; FacePipeline(load_model(build_parser().parse_args(sys.argv[1:]))); print('{}')",
        "--weights",
        args.weights,
        "--crop",
        args.crop,
        "--offline",
    ]
    results: list[dict] = []

    def record(n, what, version, seconds):
        results.append({"templates": n, "command": what, "version": version, "seconds": seconds})

    for n in sorted(args.sizes):
        data = {"now": work / f"gallery-{n}"}
        build_gallery(data["now"], n, probe, fingerprint)
        if "today" in trees:
            schema1 = "SCHEMA_VERSION = 2" not in (trees["today"] / "faceid/gallery/database.py").read_text()
            data["today"] = work / f"gallery-{n}-{args.baseline_rev}"
            baseline_copy(data["now"], data["today"], schema1)
        (data["now"] / INDEX_NAME).unlink(missing_ok=True)
        first = (
            ["-c", GALLERY_ONLY, str(data["now"]), "search", str(probe_file), fingerprint]
            if args.gallery_only
            else ["faceid_app.py", "--data-dir", str(data["now"]), *model, "identify", "--json"]
        )
        seconds, code, answer = timed(REPO, first)
        assert answer["identified"] == PROBE_NAME, answer
        record(n, "identify, no index on disk (built)", "now", seconds)
        print(f"{n:>9,}  now    identify (index built and saved)  {seconds:7.2f} s", flush=True)
        newcomer = [*model[:-1], args.newcomer, "--samples", "1"]
        commands = {
            "model": None,
            "verify": ["verify", "--name", PROBE_NAME],
            "identify": ["identify"],
            "register": [*newcomer, "register", "--name", NEWCOMER],
            "identify after register": ["identify"],
            "delete": ["delete", "--name", NEWCOMER],
            "identify after delete": ["identify"],
            "search (gallery only)": ["search"],
            "add one (gallery only)": ["add"],
            "search after add (gallery only)": ["search"],
            "delete one (gallery only)": ["delete"],
            "search after delete (gallery only)": ["search"],
        }
        if args.gallery_only:
            commands = {what: action for what, action in commands.items() if what.endswith("(gallery only)")}
        elif n == min(args.sizes):
            commands = {"list": None, **commands}
        for version, tree in trees.items():  # newcomers left by an interrupted run would be refused
            for argv in (
                ["faceid_app.py", "--data-dir", str(data[version]), "delete", "--name", NEWCOMER],
                ["-c", GALLERY_ONLY, str(data[version]), "delete", str(probe_file), fingerprint],
            ):
                subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True)
        if "today" in trees:  # its index built before anything is timed, as "now"'s was just above
            timed(trees["today"], ["-c", GALLERY_ONLY, str(data["today"]), "search", str(probe_file), fingerprint])
        for _ in range(args.repeats):
            for what, action in commands.items():
                for version, tree in trees.items():
                    if what == "model":
                        if version != "now":
                            continue
                        argv = load_only
                    elif what == "list":
                        argv = ["faceid_app.py", "--data-dir", str(data[version]), "list", "--json"]
                    elif what.endswith("(gallery only)"):
                        argv = ["-c", GALLERY_ONLY, str(data[version]), *action, str(probe_file), fingerprint]
                    elif what in ("register", "delete"):
                        argv = ["faceid_app.py", "--data-dir", str(data[version]), *action, "--json"]
                    else:
                        argv = ["faceid_app.py", "--data-dir", str(data[version]), *model, *action, "--json"]
                    seconds, code, answer = timed(tree, argv)
                    if what.startswith(("identify", "search")):
                        assert answer["identified"] == PROBE_NAME, answer
                    if what == "verify":
                        assert answer["match"] is True or answer["score"] > 0.99, answer
                    record(n, what, version, seconds)
                    print(f"{n:>9,}  {version:<5}  {what:<36} {seconds:7.2f} s", flush=True)
    print_summary(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


def compare_runtimes(args, work: Path, probe: np.ndarray, fingerprint: str) -> int:
    """--onnx: the floor, the ONNX path and the torch path, alternating, on the smallest gallery."""
    from faceid.model.onnx_model import load_onnx_embedder

    n = min(args.sizes)
    # The export's fingerprint is computed from its own (BatchNorm-folded) weights, so each runtime gets its
    # own copy of the gallery, registered under that runtime's fingerprint (as `reenroll` would make it).
    fingerprints = {"onnx": load_onnx_embedder(args.onnx).fingerprint, "torch": fingerprint}
    galleries = {runtime: work / f"gallery-{n}-{runtime}" for runtime in fingerprints}
    for runtime, gallery in galleries.items():
        build_gallery(gallery, n, probe, fingerprints[runtime])
    common = ["--offline", "--no-preview", "--probe-samples", "1", "--source", args.image]
    runtimes = {
        runtime: ["--data-dir", str(galleries[runtime]), *flags]
        for runtime, flags in {
            "onnx": ["--model", args.onnx],
            "torch": ["--weights", args.weights, "--crop", args.crop],
        }.items()
    }
    actions = {"verify": ["verify", "--name", PROBE_NAME], "identify": ["identify"]}
    floor = ["-c", "import onnxruntime, cv2, numpy; print('{}')"]
    results: list[dict] = []
    for _ in range(args.repeats):
        seconds, _, _ = timed(REPO, floor)
        results.append({"command": "import onnxruntime, cv2, numpy", "runtime": "floor", "seconds": seconds})
        print(f"floor  import onnxruntime, cv2, numpy  {seconds:6.2f} s", flush=True)
        for what, action in actions.items():
            for runtime, flags in runtimes.items():
                seconds, _, answer = timed(REPO, ["faceid_app.py", *common, *flags, *action, "--json"])
                assert answer is not None and answer["model"]["runtime"] == runtime, answer
                if what == "identify":
                    assert answer["identified"] == PROBE_NAME, answer
                else:
                    assert answer["match"] is True or answer["score"] > 0.99, answer
                results.append({"command": what, "runtime": runtime, "seconds": seconds})
                print(f"{runtime:<6} {what:<30} {seconds:6.2f} s", flush=True)
    med = {
        (c, r): statistics.median(x["seconds"] for x in results if (x["command"], x["runtime"]) == (c, r))
        for c, r in {(x["command"], x["runtime"]) for x in results}
    }
    base = med[("import onnxruntime, cv2, numpy", "floor")]
    print(f"\nmedian seconds, process start to answer, {args.repeats} runs each, {n:,} templates (same run)")
    print(f"floor (import onnxruntime, cv2, numpy): {base:.2f} s")
    print(f"{'command':<10} {'torch':>7} {'onnx':>7} {'torch/onnx':>10} {'onnx/floor':>10}")
    for what in actions:
        t, o = med[(what, "torch")], med[(what, "onnx")]
        print(f"{what:<10} {t:7.2f} {o:7.2f} {t / o:9.2f}x {o / base:9.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


def print_summary(results: list[dict]) -> None:
    medians: dict[tuple, float] = {}
    for key in {(r["templates"], r["command"], r["version"]) for r in results}:
        medians[key] = statistics.median(
            r["seconds"] for r in results if (r["templates"], r["command"], r["version"]) == key
        )
    print("\nmedian seconds, process start to answer (same run)")
    print(f"{'templates':>10}  {'command':<46} {'today':>8} {'now':>8} {'today/now':>9}")
    for n, command, version in sorted(medians, key=lambda k: (k[0], k[1])):
        if version != "now":
            continue
        today = medians.get((n, command, "today"))
        now = medians[(n, command, "now")]
        ratio = f"{today / now:8.1f}x" if today else ""
        print(f"{n:>10,}  {command:<46} {today if today else float('nan'):8.2f} {now:8.2f} {ratio:>9}")
    for (n, command, version), v in sorted(medians.items()):
        model = medians.get((n, "model", "now"))
        if command.startswith("identify") and model is not None:
            print(
                f"{version:<5} {command} at {n:,}: {v:.2f} s = model load ({model:.2f} s, same sizes' runs) + {v - model:.2f} s  "
                f"(goal: model load + 1 s)"
            )


if __name__ == "__main__":
    sys.exit(main())
