"""`make eval-arrhythmia`: the live chain offline (streamer chunks -> DetectorEngine -> AlertingCore
with a simulated nurse), scored against the reference annotations (EC57 beats, rhythm episodes,
alarms). See docs/arrhythmia.md, section "Evaluation"."""
