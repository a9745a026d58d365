"""Detector service: causal QRS detection, beat windowing and ONNX beat scoring."""
