# Command handlers, one module per group, loaded as overlays (basalt/lib/overlay.py).
# Each handler is f(pump, args) -> reply data, and refuses with core.errors.Refused, having
# validated everything before it changes anything.
