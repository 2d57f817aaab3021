"""How good the generator's faces are, without downloading anything: two numbers logged every epoch.

- **Fréchet distance in the recogniser's embedding space** (FID's formula, Heusel et al. 2017, with
  InceptionResnetV1's 512-d face embeddings in place of ImageNet Inception features): the distance between two
  Gaussians fitted to real and generated embeddings. Lower is closer; it is comparable only between runs
  measured with the same weights, sample count and side. Real crops pass through the generator's resolution
  (shrunk to its side, then back), so the distance measures the faces, not the blur of a smaller image.
- **Face share**: the share of generated images in which MTCNN (the app's detector) finds a face, each image
  enlarged to the aligned crop's 112 pixels and framed by a replicated border (a tight crop is otherwise too
  close for MTCNN's pyramid). Real crops score about 100% on this test.

The square root of the covariance product is taken through symmetric eigendecompositions (no scipy):
tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), which is symmetric positive semi-definite.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..model.embedder import Embedder
from ..model.face import FaceDetector, FacePipeline
from ..model.preprocessing import ALIGNED_SIZE

DETECT_SIDE, DETECT_BORDER = ALIGNED_SIZE, ALIGNED_SIZE // 2


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and of `b` (each (N, D), N >= 2)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def at_generator_side(images: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, side, side, 3): what a real crop looks like at the generator's resolution."""
    if images.shape[1] == side:
        return images
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])


class FaceQuality:
    """Measures generated images against a fixed sample of real crops (embedded once, at construction).

    embedder: the recogniser (the stand-in or the user's weights); its crop must be the aligned layout, which
    is what generated faces learn from an aligned training set."""

    def __init__(self, embedder: Embedder, real_images: np.ndarray, side: int, batch_size: int = 64):
        self.side = side
        self.batch_size = batch_size
        self.pipeline = FacePipeline(embedder, FaceDetector(device=embedder.device, min_face_size=20, max_side=None))
        self.real = self.embed(at_generator_side(real_images, side))
        self.real_face_share = self.face_share(at_generator_side(real_images, side))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Images of the generator's side -> embeddings of them enlarged to the recogniser's crop."""
        size = self.pipeline.spec.crop_size
        crops = [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]
        return self.pipeline.embed_crops(crops, self.batch_size)

    def face_share(self, images: np.ndarray) -> float:
        frames = [
            cv2.copyMakeBorder(
                cv2.resize(im, (DETECT_SIDE, DETECT_SIDE), interpolation=cv2.INTER_LINEAR),
                *(DETECT_BORDER,) * 4,
                cv2.BORDER_REPLICATE,
            )
            for im in images
        ]
        found = self.pipeline.detector.detect_batch(frames)
        return float(np.mean([bool(d) for d in found])) if found else 0.0

    def measure(self, generated: np.ndarray) -> dict[str, float]:
        """{"frechet": distance to the real sample, "face_share": MTCNN's hit rate, "real_face_share": the same
        on the real sample}: what each epoch's line and history record say."""
        return {
            "frechet": frechet_distance(self.real, self.embed(generated)),
            "face_share": self.face_share(generated),
            "real_face_share": self.real_face_share,
        }
