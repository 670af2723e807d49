"""The occlusion benchmark (make occlusion, docs/occlusion.md): the firmware's occlusion detection
measured with the real firmware in the loop over randomized units (inloop.py), and its threshold
trade-off swept offline over recorded sensor traces (traces.py, sweep.py)."""
