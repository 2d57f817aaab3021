"""Export the embedder for use outside this project: ONNX (dynamic batch) plus the slim inference checkpoint.

Examples:
  python export_model.py                                   # ./checkpoints/best_face_model.pth -> .onnx + _inference.pth
  python export_model.py --model run/best_face_model.pth --onnx /tmp/faceid.onnx
  python export_model.py --weights ../shared/models/pins90_scratch_irv1_fp16.pt --crop aligned5 --onnx /tmp/m.onnx

The ONNX file: input 'input' float32 (batch, 3, S, S) RGB (pixel - 127.5) / 128; output 'embedding' float32
(batch, 512) L2-normalised (mirror-averaged when the spec says flip); the preprocessing spec, threshold,
calibration and model fingerprint in its metadata (faceid.*). Before it is written, onnxruntime's embeddings
are checked against torch's (cosine >= 0.9999). Beside it go MTCNN's three stages (<stem>.pnet.onnx,
<stem>.rnet.onnx, <stem>.onet.onnx), so that the app runs the exported model with no torch installed
(--runtime onnx). See faceid/model/export.py and faceid/model/mtcnn_onnx.py.
"""

from __future__ import annotations

import argparse
import json

from ..core.errors import ArgumentParser, FaceIDError, positive_int
from ..core.report import add_verbosity_options, note, set_verbosity
from .export import OPSET, run_export
from .options import add_model_options
from .quantize import INT8_SAMPLES


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, ("model", "weights", "crop", "download"))
    p.add_argument("--onnx", help="ONNX file to write (default: beside the source, <stem>.onnx).")
    p.add_argument(
        "--inference-checkpoint", help="slim checkpoint to write (default: beside the source, <stem>_inference.pth)."
    )
    p.add_argument("--no-inference-checkpoint", action="store_true", help="write the ONNX file only.")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET}).")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write an INT8 embedder (<stem>.int8.onnx, onnxruntime static quantisation; needs --int8-data; "
        "default: off). It has its own fingerprint: calibrate its threshold with evaluate_model.py --calibrate.",
    )
    p.add_argument(
        "--int8-data",
        metavar="DIR",
        help="face images to measure the INT8 ranges on: training images (e.g. preprocess_dataset.py's output) or a "
        "folder of your own, never benchmark data (LFW is refused). Default: none.",
    )
    p.add_argument(
        "--int8-samples",
        type=positive_int,
        default=INT8_SAMPLES,
        help=f"how many images of --int8-data to use (default: {INT8_SAMPLES}).",
    )
    p.add_argument("--json", action="store_true", help="print what was written as JSON.")
    add_verbosity_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_verbosity(args.quiet, args.verbose)
    if args.int8 != (args.int8_data is not None):
        raise FaceIDError(
            "--int8 needs --int8-data DIR (face images to measure its ranges on), and only it.", "int8", "int8_data"
        )
    note("device: CPU (the export and its onnxruntime check run on the CPU)")
    report = run_export(
        args.model,
        args.weights,
        args.crop,
        args.onnx,
        args.inference_checkpoint,
        opset=args.opset,
        download=args.download,
        slim=not args.no_inference_checkpoint,
        int8_data=args.int8_data,
        int8_samples=args.int8_samples,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    onnx = report["onnx"]
    spec = onnx["spec"]
    print(
        f"wrote {onnx['path']} ({onnx['bytes'] / 2**20:.1f} MiB): input 'input' float32 (batch, 3, {spec['size']}, "
        f"{spec['size']}) RGB (x - 127.5) / 128, output 'embedding' float32 (batch, 512) L2-normalised; crop "
        f"{spec['crop']}, flip {spec['flip']}, fingerprint {onnx['fingerprint']}; onnxruntime vs torch: lowest "
        f"cosine {onnx['min_cosine_vs_torch']:.6f}"
    )
    stages = report["detector"]
    print(
        f"wrote the face detector beside it: {', '.join(s['path'] for s in stages.values())} "
        f"({sum(s['bytes'] for s in stages.values()) / 2**20:.1f} MiB; MTCNN for --runtime onnx without torch)"
    )
    if report["int8"]:
        q = report["int8"]
        print(
            f"wrote {q['path']} ({q['bytes'] / 2**20:.1f} MiB, its detector beside it): INT8 from "
            f"{q['calibration_crops']} face crops; cosine vs fp32 min {q['cosine_vs_fp32']['min']:.4f}, median "
            f"{q['cosine_vs_fp32']['median']:.4f}; fingerprint {q['fingerprint']} (its own: calibrate it with "
            f"evaluate_model.py --calibrate FOLDER --model {q['path']})"
        )
    if report["inference_checkpoint"]:
        slim = report["inference_checkpoint"]
        print(
            f"wrote {slim['path']} ({slim['bytes'] / 2**20:.1f} MiB): weights, preprocessing spec, threshold, "
            f"calibration (loads with --model)"
        )
    return 0
