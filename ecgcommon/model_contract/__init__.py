"""The model contract: what the trained artifacts in models/artifacts promise the detector.

Both sides import it: `models/` (training, torch) writes artifacts that satisfy it and
`detector/` (run time, onnxruntime) refuses artifacts that do not. Small files by concept:

- `manifest.py`: artifact file names, the manifest schema and its validation (numpy only);
- `features.py`: the anomaly features of a beat (`FEATURES`, `feature_vector`);
- `adapter.py`: `AnomalyConfig` (the manifest's "anomaly" section) and the per-patient,
  label-free adaptation `PatientAdapter` that turns reconstruction errors into scores;
- `beat_classes.py`: the beat classifier's feature list, grid and manifest checks;
- `scorer.py`: `OnnxScorer`, the autoencoder run with onnxruntime (imported lazily, on first
  use, so that importing the contract needs numpy only).

Nothing here imports torch or a service.
"""
