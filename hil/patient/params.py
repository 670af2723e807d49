"""The 30 virtual patients' parameters, read from the CSV files simglucose ships.

simglucose (PyPI, 0.2.11) carries ``params/vpatient_params.csv`` (the UVA/Padova 2008 model's
parameters and steady-state initial state for 10 adolescents, 10 adults and 10 children) and
``params/Quest.csv`` (each patient's carb ratio, correction factor, age and total daily insulin).

The files are located through the installed distribution *without importing simglucose*: its
``__init__`` imports ``gym`` (0.9.4), which we do not install. simglucose itself is installed with
``pip install --no-deps simglucose==0.2.11``; nothing here needs numpy or pandas.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PARAMS_FILE = "vpatient_params.csv"
QUEST_FILE = "Quest.csv"
# Overrides where the CSVs are read from (a directory holding both files).
PARAMS_DIR_ENV = "BASALT_PATIENT_PARAMS_DIR"

# Columns x0_ 1 .. x0_13 (note simglucose's spelling, with a space before one-digit indices): the
# model's 13 states at steady state under basal insulin u2ss, i.e. simglucose's params.iloc[2:15].
STATE_COLUMNS = tuple(f"x0_{i:2d}" for i in range(1, 14))

GROUPS = ("adolescent", "adult", "child")


@dataclass(frozen=True)
class Quest:
    """Quest.csv: the patient's therapy settings as simglucose's basal-bolus controller uses them."""

    cr: float    # carb ratio, g of carbohydrate per U
    cf: float    # correction factor, mg/dL per U
    age: float   # years
    tdi: float   # total daily insulin, U/day


@dataclass(frozen=True)
class PatientParams:
    """One row of vpatient_params.csv (every numeric column, by its CSV name) plus its Quest row."""

    name: str
    values: dict[str, float] = field(repr=False)
    quest: Quest | None = None

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    @property
    def group(self) -> str:
        return self.name.split("#", 1)[0]

    @property
    def bw(self) -> float:
        """Body weight, kg."""
        return self.values["BW"]

    @property
    def x0(self) -> tuple[float, ...]:
        """The 13-state initial condition simglucose starts from (steady state under basal)."""
        return tuple(self.values[c] for c in STATE_COLUMNS)

    @property
    def basal_u_per_min(self) -> float:
        """The basal insulin rate holding the initial steady state, as simglucose computes it:
        u2ss [pmol/kg/min] * BW [kg] / 6000 [pmol/U] -> U/min."""
        return self.values["u2ss"] * self.values["BW"] / 6000.0

    @property
    def basal_u_per_h(self) -> float:
        return self.basal_u_per_min * 60.0

    @property
    def fasting_mgdl(self) -> float:
        """Basal plasma glucose Gb, mg/dL (equal to the initial Gp/Vg)."""
        return self.values["Gb"]


def params_dir() -> Path:
    """The directory holding simglucose's parameter CSVs: $BASALT_PATIENT_PARAMS_DIR, else the
    installed simglucose package's ``params`` folder (found without importing the package)."""
    override = os.environ.get(PARAMS_DIR_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("simglucose")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "simglucose is not installed: `pip install --no-deps simglucose==0.2.11` "
            f"(or point ${PARAMS_DIR_ENV} at a folder with {PARAMS_FILE} and {QUEST_FILE})")
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "params"
        if (cand / PARAMS_FILE).is_file():
            return cand
    raise FileNotFoundError(f"simglucose has no params/{PARAMS_FILE}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@lru_cache(maxsize=4)
def _load(directory: str) -> dict[str, PatientParams]:
    d = Path(directory)
    quests: dict[str, Quest] = {}
    qpath = d / QUEST_FILE
    if qpath.is_file():
        for row in _read_rows(qpath):
            quests[row["Name"]] = Quest(cr=float(row["CR"]), cf=float(row["CF"]),
                                        age=float(row["Age"]), tdi=float(row["TDI"]))
    out: dict[str, PatientParams] = {}
    for row in _read_rows(d / PARAMS_FILE):
        name = row.pop("Name")
        values = {k: float(v) for k, v in row.items()}
        out[name] = PatientParams(name=name, values=values, quest=quests.get(name))
    return out


def load_all(directory: str | Path | None = None) -> dict[str, PatientParams]:
    """Every patient, by name, in the CSV's order (adolescent#001..010, adult#001..010, child#001..010)."""
    return _load(str(directory if directory is not None else params_dir()))


def patient_names(directory: str | Path | None = None) -> list[str]:
    return list(load_all(directory))


def load(name: str, directory: str | Path | None = None) -> PatientParams:
    """One patient's parameters by name, e.g. ``"adolescent#001"``."""
    table = load_all(directory)
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"no virtual patient {name!r}; known: {', '.join(table)}") from None
