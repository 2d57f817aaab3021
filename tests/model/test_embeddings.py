"""THE template rule (faceid/model/embeddings.py) is one function, and every path that makes a template uses it:
a real registration's stored template is, bit for bit, the template calibration builds from the same samples."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from faceid.model.embeddings import EMBEDDING_DIM, normalize_rows, template_of, unit_rows
from faceid.model.heldout import split_by_person, template_probe_scores, templates_of


def _unit(n: int, seed: int) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).normal(size=(n, EMBEDDING_DIM)))


def test_unit_rows_keep_unit_vectors_bit_for_bit_and_normalise_the_rest():
    rows = _unit(4, 0)
    assert unit_rows(rows) is rows or np.array_equal(unit_rows(rows).view(np.uint32), rows.view(np.uint32))
    scaled = rows * np.float32(3.0)
    assert np.allclose(unit_rows(scaled), rows, atol=1e-6)
    assert np.array_equal(unit_rows(unit_rows(scaled)), unit_rows(scaled))  # idempotent to the bit
    with pytest.raises(ValueError):
        unit_rows(np.zeros((1, EMBEDDING_DIM)))
    with pytest.raises(ValueError):
        unit_rows(np.full((1, EMBEDDING_DIM), np.nan))


def test_a_template_is_the_normalised_mean_direction_whatever_the_input_scale():
    rows = _unit(5, 1)
    expected = rows.mean(axis=0) / np.linalg.norm(rows.mean(axis=0))
    assert np.allclose(template_of(rows), expected, atol=1e-7)
    assert np.allclose(template_of(rows * 7), template_of(rows), atol=1e-7)
    assert template_of(rows).dtype == np.float32 and abs(float(np.linalg.norm(template_of(rows))) - 1) < 1e-6


def test_calibration_scores_are_dot_products_of_rule_made_templates():
    emb, labels = _unit(24, 2), np.repeat(np.arange(3), 8)
    split = split_by_person(labels, samples=5, probe_samples=3)
    genuine, impostor, counts = template_probe_scores(emb, labels, samples=5, probe_samples=3)
    t, p = templates_of(emb, split.template_groups), templates_of(emb, split.probe_groups)
    same = split.template_owner[:, None] == split.probe_owner[None, :]
    assert np.array_equal((t @ p.T)[same].astype(np.float64), genuine) and len(impostor) == counts["templates"] * 2


@pytest.mark.e2e
def test_a_registered_template_is_bit_identical_to_calibrations_for_the_same_samples(tmp_path, shared_data, stand_in):
    """A real registration (the app's command line, a real clip, the stand-in weights, a real SQLite gallery):
    the template it stores equals, bit for bit, calibration's template of the sample embeddings it stored."""
    from faceid.app.cli import main
    from faceid.core.report import set_verbosity

    gallery = tmp_path / "gallery"
    argv = ["--data-dir", str(gallery), "--source", str(shared_data / "videos" / "d10.mp4"), "--weights", str(stand_in)]
    argv += [
        "--crop",
        "aligned5",
        "--offline",
        "--no-preview",
        "--samples",
        "5",
        "--quiet",
        "register",
        "--name",
        "d10",
    ]
    try:
        assert main(argv) == 0
    finally:
        set_verbosity()
    with sqlite3.connect(gallery / "gallery.sqlite3") as db:
        (stored,) = db.execute("SELECT vector FROM templates").fetchone()
        samples = [blob for (blob,) in db.execute("SELECT vector FROM samples ORDER BY idx")]
    sample_vectors = np.stack([np.frombuffer(b, "<f4") for b in samples])
    assert sample_vectors.shape == (5, EMBEDDING_DIM)
    calibration_template = templates_of(sample_vectors, [np.arange(5)])[0]
    assert calibration_template.astype("<f4").tobytes() == stored
