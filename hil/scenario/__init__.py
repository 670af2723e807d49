"""Scenario runner: YAML pump scenarios for QA, run against the simulator or a board.

model.py parses and validates a file, runner.py executes it, cli.py is `basalt-scenario`.
The format is documented in docs/scenarios.md.
"""
from hil.scenario.model import Scenario, ScenarioError, load, parse
from hil.scenario.runner import run_scenario

__all__ = ["Scenario", "ScenarioError", "load", "parse", "run_scenario"]
