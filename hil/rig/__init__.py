"""The real-board rig: putting the firmware on a board (deploy) so the harness and pumpctl can
reach it over its serial console with `--port`. See docs/boards.md."""
