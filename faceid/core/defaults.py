"""Default locations shared by the scripts. No heavy imports: the app's list/delete start without torch."""

from pathlib import Path

DEFAULT_CHECKPOINT = Path("checkpoints/best_face_model.pth")  # where train_model.py puts the best model
