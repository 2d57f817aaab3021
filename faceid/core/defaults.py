"""Default locations and file names shared by the stages: the one place each is written.

No heavy imports: the app's ``list`` and ``delete`` start without torch.
"""

from pathlib import Path

# What a training run writes into its output folder (TrainConfig.out).
RUN_DIR = Path("checkpoints")
BEST_CHECKPOINT = "best_face_model.pth"  # chosen by the validation metric: what the app loads by default
FINAL_CHECKPOINT = "final_face_model.pth"  # the last epoch's weights
LAST_CHECKPOINT = "last_face_model.pth"  # written every epoch and on a signal: what continue_training.py resumes
LABEL_MAP = "label_map.json"
HISTORY = "history.json"
DEFAULT_CHECKPOINT = RUN_DIR / BEST_CHECKPOINT  # the app's, evaluator's and exporter's model when none is named

# What the app and the evaluator write.
DATA_DIR = Path("faceid_data")  # the gallery
EVAL_DIR = DATA_DIR / "eval"  # evaluation reports and plots
EVAL_CACHE = DATA_DIR / "eval_cache.sqlite"  # the evaluator's embedding cache
CALIBRATION_FILE = DATA_DIR / "calibration.json"  # evaluate_model.py --calibrate's table
