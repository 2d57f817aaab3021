"""Evaluation with the app's own pipeline: 1:1 verification pairs, 1:N identification (open set) and
calibration tables for weights without one."""
