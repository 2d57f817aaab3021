"""ONNX files an attacker wrote (issue 23 case 5, issue 19 cases 5 and 6), made in the test from a real export of
the stand-in weights: metadata the app used to trust, a foreign model claiming a gallery's fingerprint, external
data, operators and allocation bombs, onnxruntime's error texts, and the telemetry it wrote under ~/.cache."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceid.core.errors import FaceIDError

onnx = pytest.importorskip("onnx", reason="onnx not installed (requirements-dev.txt pins it)")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (requirements-dev.txt pins it)")
from onnx import numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(exported):
    out, report = exported
    return out / "m.onnx", report


def altered(src: Path, dst: Path, meta: dict | None = None, change=None) -> Path:
    """A copy of the export with metadata entries replaced (JSON text as given) and `change(proto)` applied."""
    proto = onnx.load(str(src))
    for entry in proto.metadata_props:
        key = entry.key.removeprefix("faceid.")
        if meta and key in meta:
            entry.value = meta[key]
    if change is not None:
        change(proto)
    dst.write_bytes(proto.SerializeToString())
    return dst


def load(path: Path):
    from faceid.model.onnx_model import load_onnx_embedder

    return load_onnx_embedder(path)


def one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text.endswith(".") and text.count(". ") == 0 and "\n" not in text, text
    return text


@pytest.mark.e2e
def test_metadata_numbers_get_the_checkpoints_bounds(model, tmp_path):
    path, _ = model
    pre = json.loads(onnx.load(str(path), load_external_data=False).metadata_props[0].value or "{}")
    proto = onnx.load(str(path))
    pre = json.loads(next(e.value for e in proto.metadata_props if e.key == "faceid.preprocess"))
    cases = {
        "size 100000": ({**pre, "size": 100000}, r"field 'preprocess.size' is 100000; expected a whole number from 32"),
        "size 0": ({**pre, "size": 0}, r"field 'preprocess.size' is 0; expected a whole number from 32"),
        "size 128": ({**pre, "size": 128}, r"field 'preprocess.size' is 128; expected 160, the side of its input"),
        "margin 1e9": ({**pre, "margin": 1e9}, r"field 'preprocess.margin' is 1000000000.0; expected a whole number"),
        "flip 1": ({**pre, "flip": 1}, r"field 'preprocess.flip' is 1; expected true or false"),
    }
    for name, (value, message) in cases.items():
        bad = altered(path, tmp_path / "bad.onnx", {"preprocess": json.dumps(value)})
        start = time.perf_counter()
        with pytest.raises(FaceIDError, match=message) as err:
            load(bad)
        one_sentence(err)
        assert time.perf_counter() - start < 30, name  # refused before anything is allocated for it
    for text, message in (("-0.99", "field 'threshold' is -0.99; expected a cosine similarity above 0"),
                          ("NaN", "holds NaN or Infinity"), ("[" * 100_000 + "]" * 100_000, "nests its data")):  # fmt: skip
        with pytest.raises(FaceIDError, match=message):
            load(altered(path, tmp_path / "bad.onnx", {"threshold": text}))


@pytest.mark.e2e
def test_the_fingerprint_is_computed_from_the_weights_never_read(model, tmp_path):
    path, report = model
    assert load(path).fingerprint == report["onnx"]["fingerprint"]

    def foreign(proto):  # another model: one convolution's weights changed
        t = next(t for t in proto.graph.initializer if t.name.endswith("conv2d_1a.conv.weight"))
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, t.name))

    claims = altered(path, tmp_path / "claims.onnx", change=foreign)  # keeps the real export's fingerprint claim
    with pytest.raises(FaceIDError, match=f"claims the model fingerprint '{report['onnx']['fingerprint']}', but its"):
        load(claims)
    silent = altered(path, tmp_path / "silent.onnx", {"fingerprint": "null"}, change=foreign)
    assert load(silent).fingerprint not in (report["onnx"]["fingerprint"], None)  # its own: no gallery matches it
    long = altered(path, tmp_path / "long.onnx", {"fingerprint": json.dumps("f" * 100_000)})
    with pytest.raises(FaceIDError, match=r"claims the model fingerprint 'f{57}\.\.\.', but") as err:
        load(long)
    assert len(str(err.value)) < 400


@pytest.mark.e2e
def test_external_data_operators_and_allocation_bombs_are_refused_at_load(model, tmp_path):
    path, _ = model
    small = tmp_path / "tiny.onnx"  # a 600-byte model whose one weight lives in a 2.1 GB external file

    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[512, 3, 160, 160])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="weights.bin")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["embedding"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 160, 160])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 512, 1, 1])],
        initializer=[weight],
    )
    small.write_bytes(helper.make_model(graph).SerializeToString())
    load(path)  # the modules a load imports, imported before the clock starts
    for size, message in ((2.1e9, r"is not a faceid export \(its weights are in external data files; an export is one"),
                          (2.2e9, r"is 2\.0 GiB with its external data files, larger than any ONNX model \(2 GiB\)")):  # fmt: skip
        with open(tmp_path / "weights.bin", "wb") as f:
            f.truncate(int(size))  # sparse: no disk used
        start, rss = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(FaceIDError, match=message) as err:
            load(small)  # the 2.1 GB one used to be loaded (5 GB RSS, 15 s) before an internal error
        one_sentence(err)
        assert time.perf_counter() - start < 5 and small.stat().st_size < 10_000
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # kB: nothing of it was read
    (tmp_path / "weights.bin").unlink()

    def tile(proto):
        proto.graph.node[0].op_type = "Tile"

    with pytest.raises(FaceIDError, match=r"is not a faceid export \(it uses the operator Tile\)"):
        load(altered(path, tmp_path / "tile.onnx", change=tile))

    # only the export's operators, shapes that add up, and 10^12 floats per image at run time: each pixel expanded
    # to 2**24 copies, then averaged back (a memory bomb hidden in a well-formed graph)
    const = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "column"], ["pixels"]),
            helper.make_node("Concat", ["one", "wide"], ["shape"], axis=0),
            helper.make_node("Expand", ["pixels", "shape"], ["bomb"]),
            helper.make_node("ReduceMean", ["bomb", "one"], ["mean"], keepdims=1),
            helper.make_node("Reshape", ["mean", "row"], ["embedding"]),
        ],
        "bomb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 160, 160])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 76800])],
        initializer=[const("column", [-1, 1]), const("one", [1]), const("wide", [2**24]), const("row", [-1, 76800])],
    )
    bomb = tmp_path / "bomb.onnx"
    bombed = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    bombed.metadata_props.extend(onnx.load(str(path), load_external_data=False).metadata_props)  # it claims to be ours
    bomb.write_bytes(bombed.SerializeToString())
    with pytest.raises(
        FaceIDError, match=r"is not a faceid export \(its tensor bomb would hold 1,288,490,188,800 elem"
    ):
        load(bomb)

    def opset(proto):  # parses and passes our checks; onnxruntime refuses it with a long message
        proto.opset_import[0].version = 99

    with pytest.raises(FaceIDError, match=r"is not a usable ONNX model \(onnxruntime: ") as err:
        load(altered(path, tmp_path / "opset.onnx", change=opset))
    text = one_sentence(err)
    inner = text.split("(onnxruntime: ", 1)[1]
    assert "[ONNXRuntimeError]" not in inner and (inner.endswith(" ...).") or len(inner) < 205), inner


@pytest.mark.e2e
def test_the_onnx_path_writes_nothing_outside_the_gallery(model, shared_data, tmp_path):
    """Register and verify on real clip frames through the ONNX export with a temporary HOME and XDG_CACHE_HOME:
    onnxruntime used to write ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}."""
    path, _ = model
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    clip = shared_data / "videos" / "d18.mp4"
    common = ["--data-dir", tmp_path / "gallery", "--model", path, "--no-preview", "--offline", "--source", clip]
    common += ["--sample-gap", "8", "--json"]
    for action in (["--samples", "3", "--max-frames", 108, "register", "--name", "d18"],
                   ["--start-frame", 108, "--probe-samples", "1", "verify", "--name", "d18"]):  # fmt: skip
        res = subprocess.run(
            [sys.executable, str(REPO / "faceid_app.py"), *map(str, common), *map(str, action)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
        )  # fmt: skip
        data = json.loads(res.stdout)
        assert res.returncode in (0, 1) and data["model"]["runtime"] == "onnx", res.stderr[-2000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], written
