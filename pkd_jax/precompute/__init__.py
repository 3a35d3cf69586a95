"""Computed once before training and cached by content: the frozen teacher's outputs, the gate's
teacher track, frozen trunks' features and their BatchNorm calibration."""
