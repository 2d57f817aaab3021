"""The recognition model: crop spec, network and weights, the embedder, checkpoints, calibration tables, ONNX
export and the face pipeline (detect -> crop -> embed). Importing this package imports no torch; its modules
that need torch import it themselves."""
