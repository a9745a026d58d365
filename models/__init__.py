"""Beat model: training, calibration, ONNX export and evaluation (needs the `train` extra)."""
