"""Training: settings (`config.TrainConfig`), the trainer, the batch feed, heads, recipe, validation and the
command lines of train_model.py / continue_training.py."""
