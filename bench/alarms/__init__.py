"""`make bench-alarms`: alarm timing and alarm load, written to reports/alarms.json.

A benchmark, not a service: it drives the real cores. Each signal is chunked by the streamer's
`BedStream`, fed to the detector's `DetectorEngine` (`handle`, `tick` at each batching deadline,
the ONNX scorer, anomaly rule and beat classifier when a model is in models/artifacts), and every
publication, with the device's chunks, goes to alerting's `AlertingCore.on_message`, whose alarm
publications are timed (`replay`).

- asystole_delay_s: from the moment the 4 s criterion is met (last detected beat + 4 s, signal
  time = wall time in a live stream) to the alarm's publication (the end of the sample chunk that
  triggered it plus the batching wait and the measured processing time). Test signal: a synthetic
  ECG that stops beating (ventricular standstill: P waves and noise go on, so the lead is not
  flat) (`signals`, `timing`).
- tachy_time_to_alarm_s: from the first beat of a sudden tachycardia (160 bpm) to its alarm.
- alarms_per_bed_hour: every MIT-BIH record through detector and alerting, alarms raised by
  priority per bed-hour (`load`). With `--beats reference` (or when no model exists) the
  reference annotations stand in for the detector (a perfect detector; labelled as such).
- dashboard_latency_s: from a beat result on the bus to its row in the page, measured with the
  real alerting service, a real broker and headless chromium (`--dashboard`, `dashboard`).

Timing runs twice: in-process (the cores chunk by chunk on the signal clock, random chunk
phase) and live (`live`: simulated devices stream in real time through a real broker to the real
detector and alerting services; wall clock). Each headline figure is the worst case over all
trials of both runs; the details of each run are in the report.
"""

from bench.alarms.signals import FS, REFERENCE_LAG_S, T0

__all__ = ["FS", "REFERENCE_LAG_S", "T0"]
