"""MTCNN's steps around its three networks, in numpy: the image pyramid, box generation, NMS, box regression,
squaring, padding, landmarks. Step for step the arithmetic of facenet-pytorch's `detect_face` (float32, the
same rounding), so that the ONNX stages (`mtcnn_onnx`) find what facenet-pytorch's MTCNN finds, without torch.

The networks are callables on float32 NCHW arrays, normalised ``(pixel - 127.5) * 0.0078125``:
P-net (any size >= 12) -> (box offsets (N, 4, h, w), face probability (N, 2, h, w)); R-net (24 x 24) ->
(offsets (N, 4), probability (N, 2)); O-net (48 x 48) -> (offsets (N, 4), landmarks (N, 10), probability (N, 2)).

Two differences from facenet-pytorch, both where it has no answer: a candidate box wholly outside the image is
dropped (facenet-pytorch then pairs the next crops with the wrong boxes, or fails), and candidates are cut to
`MAX_CANDIDATES` per stage, highest scores first, so memory stays bounded on any image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np

Net = Callable[[np.ndarray], Sequence[np.ndarray]]

PYRAMID_FACTOR = 0.709  # facenet-pytorch's MTCNN default: each pyramid level is 0.709 of the one before
CELL, STRIDE = 12, 2  # P-net's window and its stride in the pyramid level
MAX_CANDIDATES = 20_000  # per stage; far beyond any real frame (a crowded 640 px frame gives a few hundred)


@lru_cache(maxsize=1024)
def _area_ranges(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's area interpolation (adaptive average pooling) along one axis: output i averages inputs
    floor(i * n_in / n_out) .. ceil((i + 1) * n_in / n_out) - 1. Returns (starts, ends, counts)."""
    i = np.arange(n_out)
    starts, ends = (i * n_in) // n_out, -(-(i + 1) * n_in // n_out)
    return starts, ends, (ends - starts).astype(np.float64)


def sum_table(image: np.ndarray) -> np.ndarray:
    """The image's summed-area table (H + 1, W + 1, 3), float64: every area average below is four look-ups in it,
    exact (integer sums), and the table is made once per image for the pyramid and every crop."""
    return cv2.integral(np.ascontiguousarray(image), sdepth=cv2.CV_64F)


def area_resize(table: np.ndarray, y0: int, y1: int, x0: int, x1: int, height: int, width: int) -> np.ndarray:
    """The image's pixels [y0:y1, x0:x1] resized to height x width by area averaging (torch's ``mode="area"``),
    as float32 (3, height, width)."""
    sy, ey, cy = _area_ranges(y1 - y0, height)
    sx, ex, cx = _area_ranges(x1 - x0, width)
    sy, ey, sx, ex = sy + y0, ey + y0, sx + x0, ex + x0
    total = table[np.ix_(ey, ex)] - table[np.ix_(sy, ex)] - table[np.ix_(ey, sx)] + table[np.ix_(sy, sx)]
    return (total / (cy[:, None, None] * cx[None, :, None])).transpose(2, 0, 1).astype(np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x - 127.5) * 0.0078125


def pyramid_scales(height: int, width: int, min_face: float, factor: float = PYRAMID_FACTOR) -> list[float]:
    """The scales at which P-net's 12 px window sees faces from `min_face` px up to the whole image."""
    m = 12.0 / min_face
    minl = min(height, width) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def candidate_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-net's windows whose face probability >= threshold, as (n, 9): x1, y1, x2, y2 in image pixels, score,
    then the four box offsets. reg (4, h, w), prob (h, w)."""
    ys, xs = np.nonzero(prob >= threshold)
    if len(ys) > MAX_CANDIDATES:
        keep = np.argsort(-prob[ys, xs], kind="stable")[:MAX_CANDIDATES]
        order = np.sort(keep)
        ys, xs = ys[order], xs[order]
    bb = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((STRIDE * bb + 1) / s)
    q2 = np.floor((STRIDE * bb + CELL) / s)
    return np.concatenate([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], axis=1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's NMS: indices kept, highest score first; a box goes when its IoU (areas without +1) with a
    kept one is above `threshold`."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter) <= threshold]
    return np.asarray(keep, np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's last NMS ("Min"): overlap over the smaller box, areas with +1, its sort order."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[w * h / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's `rerec`: each box made square on its longer side, about its centre (in place)."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """facenet-pytorch's `bbreg`: move each side by its offset times the box's size (+1) (in place)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + offsets[:, :4] * np.stack([w, h, w, h], axis=1)
    return boxes


def crops(table: np.ndarray, boxes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The boxes' pixels (1-based, clipped to the image as facenet-pytorch's `pad` does), each resized to
    side x side by area and normalised: (n, 3, side, side), and the mask of boxes that overlap the image.
    `table`: the image's `sum_table`."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    ok = (ey > y - 1) & (ex > x - 1)
    out = [area_resize(table, y[k] - 1, ey[k], x[k] - 1, ex[k], side, side) for k in np.nonzero(ok)[0]]
    stacked = np.stack(out) if out else np.zeros((0, 3, side, side), np.float32)
    return normalise(stacked).astype(np.float32), ok


def _top(boxes: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most MAX_CANDIDATES rows, highest scores (column 4) first."""
    if len(boxes) <= MAX_CANDIDATES:
        return (boxes, *others)
    keep = np.argsort(-boxes[:, 4], kind="stable")[:MAX_CANDIDATES]
    return (boxes[keep], *(o[keep] for o in others))


def detect_faces(
    images: np.ndarray,
    pnet: Net,
    rnet: Net,
    onet: Net,
    min_face: float,
    thresholds: Sequence[float],
    factor: float = PYRAMID_FACTOR,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces in each of a batch of equal-size RGB uint8 images (N, H, W, 3): per image (boxes (n, 5): x1, y1, x2,
    y2, probability; landmarks (n, 5, 2) in pixels: eyes, nose, mouth corners)."""
    n, h, w = images.shape[:3]
    tables = [sum_table(image) for image in images]
    per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
    for scale in pyramid_scales(h, w, min_face, factor):
        size = int(h * scale + 1), int(w * scale + 1)
        level = normalise(np.stack([area_resize(t, 0, h, 0, w, *size) for t in tables])).astype(np.float32)
        reg, prob = pnet(level)
        for i in range(n):
            found = candidate_boxes(reg[i], prob[i, 1], scale, thresholds[0])
            per_image[i].append(found[nms(found[:, :4], found[:, 4], 0.5)])
    empty = np.zeros((0, 9), np.float32)
    return [
        _refine(tables[i], np.concatenate(per_image[i]) if per_image[i] else empty, rnet, onet, thresholds)
        for i in range(n)
    ]


def _refine(
    table: np.ndarray, boxes: np.ndarray, rnet: Net, onet: Net, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """R-net and O-net on P-net's candidates in one image (its `sum_table`): (boxes (n, 5), landmarks (n, 5, 2))."""
    none = (np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32))
    (boxes,) = _top(boxes)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    corners = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
    boxes = square(np.concatenate([corners, boxes[:, 4:5]], axis=1))
    if not len(boxes):
        return none
    # Second stage: R-net on 24 x 24 crops
    data, ok = crops(table, boxes, 24)
    boxes = boxes[ok]
    if not len(boxes):
        return none
    offsets, prob = rnet(data)
    passed = prob[:, 1] > thresholds[1]
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    offsets = offsets[passed]
    boxes, offsets = _top(boxes, offsets)
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = square(regress(boxes[pick], offsets[pick]))
    if not len(boxes):
        return none
    # Third stage: O-net on 48 x 48 crops, landmarks
    data, ok = crops(table, boxes, 48)
    boxes = boxes[ok]
    if not len(boxes):
        return none
    offsets, points, prob = onet(data)
    passed = prob[:, 1] > thresholds[2]
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    offsets, points = offsets[passed], points[passed]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    px = bw * points[:, :5] + boxes[:, 0:1] - 1
    py = bh * points[:, 5:10] + boxes[:, 1:2] - 1
    landmarks = np.stack([px, py], axis=2)
    boxes = regress(boxes, offsets)
    pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
    return boxes[pick].astype(np.float32), landmarks[pick].astype(np.float32)
