"""Streamer: replays MIT-BIH records as live ECG devices, one MQTT stream per bed."""
