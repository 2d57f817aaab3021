"""Training data: CASIA-WebFace from Kaggle, MXNet RecordIO read without MXNet, the unpacked JPG tree, and the
face datasets the trainer reads (`datasets.open_dataset`)."""
