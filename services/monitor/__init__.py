"""The model monitor: drift and live quality of the served versions, from the inference-log and
ground-truth tables, exported to Prometheus, reported per window, and the retraining trigger."""
