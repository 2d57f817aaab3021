"""faceid: fine-tune a face-recognition network and run face ID (register / verify / identify) from a terminal.

The command lines (faceid_app.py, train_model.py, ...; `faceid.cli`) are the main interface. This is the small
library API under them. Names load lazily, so ``import faceid`` costs no torch; each is documented where it
lives. Images are RGB uint8 numpy arrays (H, W, 3); embeddings are float32 (N, 512), L2-normalised, so a dot
product is a cosine similarity (-1..1, higher = more alike).

Embed the faces of a photo (`load_embedder`, `FacePipeline`, `read_image_file`)::

    from faceid import FacePipeline, load_embedder, read_image_file
    pipe = FacePipeline(load_embedder(weights="vggface2.pt"))     # or model_path="best_face_model.pth"
    result = pipe.analyze(read_image_file("alice.jpg"))          # largest face: .face (box), .crop, .embedding
    print(result.face.box, result.embedding.shape)               # [x1 y1 x2 y2]  (512,)

Average several samples into a template, THE rule the app and the calibration share (`template_of`)::

    import numpy as np
    from faceid import template_of
    t = template_of(np.stack([e1, e2, e3]))                        # (512,) mean, L2-normalised
    print(float(t @ probe))                                        # cosine score against a probe

Register and identify in a private gallery folder (`Gallery`; SQLite, torch-free)::

    from faceid import Gallery
    with Gallery.open("faceid_data") as g:
        g.register("Alice", crops, embeddings, fingerprint=pipe.embedder.fingerprint)
        print(g.identify(probe, pipe.embedder.fingerprint, k=3))  # [Match(name, score), ...] best first

Read a threshold from the model's calibration table (`Calibration`, on `Embedder.calibration`)::

    table = pipe.embedder.calibration                             # None for uncalibrated weights
    t = table.threshold_for_fpir(1e-3, gallery_size=100)           # a `Threshold`
    print(t.value, t.text)                                         # the number and where it came from

Choose the runtime the app would (`choose_runtime`: torch, or onnxruntime for an export)::

    from faceid import choose_runtime
    embedder, note = choose_runtime("best_face_model.onnx", None, None, None, download=False)
    print(note)                                                    # "runtime onnx (an .onnx model)"
    pipe = FacePipeline(embedder)

Train and continue (`TrainConfig`, `continue_training`; the settings are train_model.py's flags; `train` is
not a top-level name because `faceid.train` is the training package)::

    from faceid import TrainConfig, continue_training
    from faceid.train.trainer import train
    code = train(TrainConfig(data="datasets/casia-webface-images", epochs=2))  # 0 when done
    continue_training("checkpoints/last_face_model.pth")                         # exact resume
    continue_training("checkpoints/last_face_model.pth", {"lr": 3e-5}, new_phase=True)  # next phase

Evaluate on LFW pairs with the app's own pipeline (`run_evaluation`, evaluate_model.py)::

    from faceid import run_evaluation
    report = run_evaluation(pairs="lfw/pairsDevTest.txt", images="lfw/images", weights="w.pt", crop="aligned5")
    print(report["metrics"]["accuracy"], report["metrics"]["auc"])
    print(report["outputs"])                                        # the JSON report and the ROC plot

Every expected failure is a `FaceIDError` whose message is one sentence for the user::

    from faceid import FaceIDError, Gallery
    try:
        Gallery.open("/tmp")                                       # a folder that holds other files
    except FaceIDError as err:
        print(err)                                                 # "/tmp ... is not a faceid gallery; ..."
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_HOMES = {
    "FaceIDError": "faceid.core.errors",
    "read_image_file": "faceid.core.decode",
    "template_of": "faceid.model.embeddings",
    "load_embedder": "faceid.model.embedder",
    "FacePipeline": "faceid.model.face",
    "Calibration": "faceid.model.calibration",
    "Threshold": "faceid.model.calibration",
    "choose_runtime": "faceid.model.runtime",
    "Gallery": "faceid.gallery.store",
    "TrainConfig": "faceid.train.config",
    "continue_training": "faceid.train.trainer",
    "run_evaluation": "faceid.eval.verification_run",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'faceid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
