"""What an embedding is, and THE template rule: one home for both, torch-free.

An embedding is a float32 vector of `EMBEDDING_DIM` numbers with unit L2 norm, so the dot product of two is
their cosine similarity (-1..1, higher = more alike). Several images of one person become one vector by the
template rule: the L2-normalised mean of their embeddings. The gallery's registered templates, the app's probes
(the mean of ``--probe-samples`` frames), the evaluator's 1:N templates and the calibration tables all go
through `template_of`, so the false-accept rates measured on held-out people are rates of the very vectors the
app compares.

    >>> import numpy as np
    >>> samples = normalize_rows(np.random.default_rng(0).normal(size=(5, EMBEDDING_DIM)))
    >>> t = template_of(samples)
    >>> t.shape, t.dtype, round(float(t @ t), 5)
    ((512,), dtype('float32'), 1.0)
"""

from __future__ import annotations

import numpy as np

EMBEDDING_DIM = 512  # InceptionResnetV1's embedding size; the gallery stores vectors of exactly this size
UNIT_TOLERANCE = 1e-4  # a norm this close to 1 is a unit vector already (float32 rounding is ~1e-7)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis as float32: (..., D) -> (..., D). All-zero or non-finite rows raise
    ValueError: they have no direction to compare."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("embedding has a zero or non-finite norm")
    return x / norms


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Embeddings as unit vectors, float32 (..., D): a row whose norm is already 1 (within `UNIT_TOLERANCE`, as
    the network's are) is kept bit for bit, any other is normalised; zero or non-finite rows raise ValueError.

    Why not always divide by the norm: dividing a unit vector by its float32 norm changes its last bits, so the
    gallery (which checks what it is given) and calibration (which is given the network's output) would
    average slightly different numbers and their templates would not be the same vector."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("embedding has a zero or non-finite norm")
    off = np.abs(norms - 1) > UNIT_TOLERANCE
    return np.where(off, x / norms, x) if off.any() else x


def template_of(samples: np.ndarray) -> np.ndarray:
    """(N, D) embeddings of one person's images, N >= 1 -> (D,) float32: the mean of their unit vectors
    (`unit_rows`), L2-normalised.

    ValueError when the mean has no direction (samples that cancel out, or non-finite ones)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2 or len(samples) == 0:
        raise ValueError(f"a template needs (N, D) samples with N >= 1, not shape {samples.shape}")
    return normalize_rows(unit_rows(samples).mean(axis=0))
