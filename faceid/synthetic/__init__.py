"""Synthetic faces: a DCGAN face generator (train_gan.py, generate_faces.py) and a real-vs-synthetic detector
(train_detector.py) that the app uses to refuse generated faces (docs/synthetic.md)."""
