"""What an ONNX file must be before onnxruntime reads it, and its fingerprint, computed from what it computes.

An ``.onnx`` file is a program a user hands us. Before any of it reaches onnxruntime (`onnx_model.OnnxForward`):

- **size**: the file and every external-data file its tensors name are counted (`MAX_ONNX_BYTES`) before either
  is read; an export of ours is one file, so external data is refused after that ("not a faceid export");
- **operators**: every node is one of `EXPORT_OPS`, the operators `export.export_onnx` emits (the export checks
  its own output against the list, so the two cannot drift apart), in the default domain, with no functions or
  subgraphs;
- **memory**: the shapes the graph computes are worked out for a batch of 1 and of 2 images (the shape
  arithmetic evaluated here, then onnx's shape inference), and every tensor must be known, grow no faster than
  the batch, and hold at most `MAX_ELEMENTS_PER_IMAGE` elements per image: a graph that would ask for 10^12
  floats at run time is refused at load.

The fingerprint (`fingerprint`) is a hash of the preprocessing spec, every node (operator, wiring, attributes)
and every weight (initializer), never read from the metadata: a foreign model that claims a gallery's
fingerprint gets its own, and the gallery refuses it. (It is not the torch network's fingerprint: the export
folds BatchNorm into the convolutions, so the weights differ in bytes; `reenroll` moves a gallery across.)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FaceIDError
from ..core.fileio import require_regular_file
from ..core.report import command

MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit, counted with external data before anything is read
EXPORT_OPS = frozenset(
    {
        "Add", "Clip", "Concat", "Conv", "Div", "Expand", "Gemm", "MaxPool", "Mul", "ReduceL2", "ReduceMean",
        "Relu", "Reshape", "Shape", "Slice", "Squeeze",
        "QuantizeLinear", "DequantizeLinear",  # export_model.py --int8 (QDQ)
    }
)  # fmt: skip
SAME_SHAPE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Relu", "Clip"})  # output shape = input's
SHAPE_OPS = frozenset({"Shape", "Squeeze", "Unsqueeze", "Concat", "Mul", "Add", "Slice", "Reshape"})
MAX_ELEMENTS_PER_IMAGE = 1 << 24  # elements of any one tensor per input image (InceptionResnetV1 at 160 px: < 1M)
MAX_SHAPE_VALUES = 64  # a shape tensor holds a few dimensions


@dataclass(frozen=True)
class OnnxFile:
    """An ONNX file that passed every check: its serialized bytes (what onnxruntime is given: never re-read from
    disk), its faceid metadata as text, its input side and its computed fingerprint (`fingerprint`)."""

    data: bytes
    metadata: dict[str, str]
    input_size: int
    proto: Any  # onnx.ModelProto


def require_module(module: str, purpose: str):
    """Import an optional module, or one sentence saying how to install it. onnxruntime's telemetry (which writes
    a device id and an event queue under ~/.cache) is switched off before it can load: nothing is written outside
    the gallery and the outputs the user names."""
    import importlib

    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        raise FaceIDError(
            f"{module} is not installed, which is needed to {purpose}; install the versions pinned "
            f"in requirements.txt and requirements-dev.txt (pip install -r requirements-dev.txt)."
        ) from None
    if module == "onnxruntime" and hasattr(loaded, "disable_telemetry_events"):
        loaded.disable_telemetry_events()
    return loaded


def not_ours(path: Path, why: str) -> FaceIDError:
    return FaceIDError(f"{path} is not a faceid export ({why}); write one with {command('export_model.py')}.")


def read_onnx_file(path: str | os.PathLike) -> OnnxFile:
    """The checked file (module docstring), or one sentence saying what is wrong with it."""
    onnx = require_module("onnx", "check an ONNX model before it runs")
    path = Path(path)
    st = require_regular_file(path, "The ONNX model", "model")  # a pipe would block the read below forever
    if st.st_size > MAX_ONNX_BYTES:
        raise FaceIDError(f"{path} is {st.st_size / 2**30:.1f} GiB, larger than any ONNX model (2 GiB); refusing it.")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ONNX_BYTES + 1)
        proto = onnx.load_model_from_string(data)
    except OSError as err:
        raise FaceIDError(f"Cannot read the ONNX model {path}: {err.strerror}.") from None
    except Exception:  # protobuf's DecodeError and friends: all mean "not an ONNX file"
        raise FaceIDError(f"{path} is not a usable ONNX model (it does not parse as one).") from None
    _check_external_data(path, proto, len(data))
    _check_operators(path, proto)
    size = _input_size(path, proto)
    _check_memory(path, proto, onnx)
    meta = {p.key: p.value for p in proto.metadata_props}
    return OnnxFile(data, meta, size, proto)


def _check_external_data(path: Path, proto, size: int) -> None:
    external = [t for t in proto.graph.initializer if t.data_location == 1]  # TensorProto.EXTERNAL
    if not external:
        return
    total = size
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        total += _external_file_size(path.parent / location)
    if total > MAX_ONNX_BYTES:
        raise FaceIDError(
            f"{path} is {total / 2**30:.1f} GiB with its external data files, larger than any ONNX model (2 GiB); "
            f"refusing it before reading them."
        )
    raise not_ours(path, "its weights are in external data files; an export is one file")


def _external_file_size(location: Path) -> int:
    """Bytes an external data file would add (0 when it is missing, not a regular file or not a valid path):
    only the size limit's message depends on it, since any external data is refused as not our export."""
    try:
        st = location.stat()
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _check_operators(path: Path, proto) -> None:
    if len(proto.functions):
        raise not_ours(path, "it defines functions")
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in EXPORT_OPS:
            raise not_ours(path, f"it uses the operator {_clean(node.domain + '.' + node.op_type).lstrip('.')}")
        if any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS: subgraphs
            raise not_ours(path, f"its {node.op_type} node holds a subgraph")


def _input_size(path: Path, proto) -> int:
    """The side S of the one input (batch, 3, S, S) with a symbolic batch."""
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    dims = list(inputs[0].type.tensor_type.shape.dim) if len(inputs) == 1 else []
    values = [d.dim_value for d in dims]
    if len(dims) != 4 or not dims[0].dim_param or values[1] != 3 or not 0 < values[2] == values[3]:
        raise not_ours(path, "its input is not one (batch, 3, size, size) image batch")
    return int(dims[2].dim_value)


def _clean(text: str) -> str:
    from ..core.validate import clean_text

    return clean_text(text, 60)


# ----------------------------------------------------------------------------- memory the graph would ask for


def _check_memory(path: Path, proto, onnx) -> None:
    sizes = [_tensor_sizes(path, proto, onnx, batch) for batch in (1, 2)]
    for name, one in sizes[0].items():
        two = sizes[1].get(name, one)
        if one > MAX_ELEMENTS_PER_IMAGE or two > 2 * max(one, 1):
            raise not_ours(
                path,
                f"its tensor {_clean(name)} would hold {max(one, two // 2):,} elements per image (or grow faster than "
                f"the batch), more than any face embedder needs",
            )


def _tensor_sizes(path: Path, proto, onnx, batch: int) -> dict[str, int]:
    """Element count of every tensor the graph computes for a batch of `batch` images."""
    from onnx import helper, shape_inference

    graph = proto.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    side = inputs[0].type.tensor_type.shape.dim[2].dim_value
    constants = _evaluate_shape_arithmetic(path, proto, (batch, 3, side, side))
    light = helper.make_graph(
        list(graph.node),
        "checked",
        [helper.make_tensor_value_info(inputs[0].name, inputs[0].type.tensor_type.elem_type, [batch, 3, side, side])],
        [helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None) for o in graph.output],
        initializer=[_light_initializer(t, constants, onnx) for t in graph.initializer]
        + [onnx.numpy_helper.from_array(v, name) for name, v in constants.items() if name not in _names(graph)],
    )
    model = helper.make_model(light, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    try:
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as err:  # InferenceError and friends: the graph is not well formed
        raise not_ours(
            path, f"its shapes do not add up: {_clean(str(err).splitlines()[0] if str(err) else '')}"
        ) from None
    out = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = value.type.tensor_type
        dims = list(t.shape.dim) if t.HasField("shape") else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            raise not_ours(path, f"the shape of its tensor {_clean(value.name)} cannot be known before it runs")
        out[value.name] = int(np.prod([d.dim_value for d in dims], dtype=np.float64)) if dims else 1
    return out


def _names(graph) -> set[str]:
    return {t.name for t in graph.initializer}


def _light_initializer(tensor, constants: dict[str, np.ndarray], onnx):
    """The initializer without its bytes (shape inference needs only its type and dims), unless it is small."""
    if tensor.name in constants:
        return onnx.numpy_helper.from_array(constants[tensor.name], tensor.name)
    if int(np.prod(tensor.dims, dtype=np.float64)) <= MAX_SHAPE_VALUES:
        return tensor
    light = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    return light


def _evaluate_shape_arithmetic(path: Path, proto, input_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The values of every small tensor that feeds a shape (Expand's, Reshape's, Slice's bounds), computed here
    from the input's shape and constants, so onnx's shape inference sees numbers. Their producers must be
    shape operators (`SHAPE_OPS`) reading only constants and the input's shape."""
    from onnx import numpy_helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer if int(np.prod(t.dims, dtype=np.float64)) <= MAX_SHAPE_VALUES}
    wanted = [
        n.input[i] for n in graph.node for i in range(1, len(n.input)) if n.op_type in ("Expand", "Reshape", "Slice")
    ]
    values: dict[str, np.ndarray] = {}

    def value(name: str, depth: int = 0) -> np.ndarray:
        if name in values:
            return values[name]
        if name in consts:
            values[name] = numpy_helper.to_array(consts[name])
            return values[name]
        node = producer.get(name)
        if node is None or node.op_type not in SHAPE_OPS or depth > 32:
            raise not_ours(path, "its shape arithmetic reads something other than constants and the input's shape")
        attrs = {a.name: onnx_attr(a) for a in node.attribute}
        if node.op_type == "Shape":
            source = node.input[0]
            while source in producer and producer[source].op_type in SAME_SHAPE_OPS:  # the INT8 file's Q/DQ pair
                source = producer[source].input[0]
            if source not in {i.name for i in graph.input} - set(consts):
                raise not_ours(path, "its shape arithmetic reads the shape of an inner tensor")
            result = np.asarray(input_shape, dtype=np.int64)[attrs.get("start", 0) : attrs.get("end", None)]
        else:
            args = [value(i, depth + 1) if i else None for i in node.input]
            result = _shape_op(node.op_type, args, attrs)
        if result.size > MAX_SHAPE_VALUES or (result.dtype.kind == "i" and np.abs(result).max(initial=0) > 2**40):
            raise not_ours(path, "its shape arithmetic makes numbers no image batch has")
        values[name] = result
        return result

    for name in wanted:
        if name:
            value(name)
    return {k: v for k, v in values.items() if k not in consts}


def onnx_attr(a):
    from onnx import helper

    return helper.get_attribute_value(a)


def _shape_op(op: str, args: list, attrs: dict) -> np.ndarray:
    """The few operators shape arithmetic uses, on small int64 arrays (ONNX semantics)."""
    x = args[0]
    if op == "Squeeze":
        axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
        return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in np.ravel(axes)))
    if op == "Unsqueeze":
        axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes", [])
        return np.expand_dims(x, tuple(int(a) for a in np.ravel(axes)))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=int(attrs.get("axis", 0)))
    if op in ("Mul", "Add"):
        return (x * args[1]) if op == "Mul" else (x + args[1])
    if op == "Reshape":
        shape = [int(s) for s in args[1]]
        shape = [x.shape[i] if s == 0 and not attrs.get("allowzero") else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Slice":
        starts, ends = np.ravel(args[1]), np.ravel(args[2])
        axes = np.ravel(args[3]) if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = np.ravel(args[4]) if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[int(a)] = slice(int(np.clip(s, -(2**62), 2**62)), int(np.clip(e, -(2**62), 2**62)), int(st))
        return x[tuple(index)]
    raise ValueError(op)


# ----------------------------------------------------------------------------- the fingerprint


def fingerprint(proto, spec: dict) -> str:
    """A short hash of the preprocessing spec, every node (operator, domain, wiring, attributes; not names,
    metadata or docs) and every initializer (name, type, dims, bytes): what the file computes."""
    from onnx import numpy_helper

    h = hashlib.sha256(json.dumps(sorted(spec.items())).encode())
    for node in proto.graph.node:
        h.update(f"{node.domain}.{node.op_type}({','.join(node.input)})->({','.join(node.output)})".encode())
        for a in sorted(node.attribute, key=lambda a: a.name):
            a = type(a).FromString(a.SerializeToString())
            a.ClearField("doc_string")
            h.update(a.SerializeToString(deterministic=True))
    for t in proto.graph.initializer:
        h.update(f"{t.name}:{t.data_type}:{list(t.dims)}".encode())
        h.update(t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes())
    return h.hexdigest()[:16]
