"""The UVA/Padova 2008 T1D patient, exactly as simglucose 0.2.11 codes it, but fast.

Equations, units, meal and insulin handling are those of ``simglucose/patient/t1dpatient.py``
(``T1DPatient.model`` and ``T1DPatient.step``), which implements Dalla Man et al., "Meal simulation
model of the glucose-insulin system", IEEE TBME 2007, and Kovatchev et al., "In silico preclinical
trials: a proof of concept in closed-loop control of type 1 diabetes", JDST 2009 (the 2008 FDA-
accepted UVA/Padova simulator). See docs/patients.md.

State (13 floats, simglucose's order and units):

    0 Qsto1  solid glucose in stomach, mg         7 I1    delayed insulin (liver), pmol/L
    1 Qsto2  liquid glucose in stomach, mg        8 Id    delayed insulin action on EGP, pmol/L
    2 Qgut   glucose in intestine, mg             9 Il    insulin in liver, pmol/kg
    3 Gp     plasma glucose, mg/kg               10 Isc1  subcutaneous insulin 1, pmol/kg
    4 Gt     tissue glucose, mg/kg               11 Isc2  subcutaneous insulin 2, pmol/kg
    5 Ip     plasma insulin, pmol/kg             12 Gs    subcutaneous (interstitial) glucose, mg/kg
    6 X      remote insulin action, pmol/L

What is fast: the right-hand side is plain float arithmetic over parameters bound once per patient
(simglucose reads ~40 pandas attributes per call, which is ~90% of its run time), and the
integrator is a line-for-line port of the DOPRI5 that simglucose runs through scipy (default: same
steps, same result to ~1e-11 mg/dL, ~0.2 s per patient-day) or, faster still, a fixed-step RK4
(``integrator="rk4"``, 2 steps per minute: within 0.02 mg/dL of simglucose, ~0.05 s per day).
"""
from __future__ import annotations

from math import sqrt, tanh

from .exercise import REST, Exercise
from .params import PatientParams, load, load_all

U_TO_PMOL = 6000.0      # simglucose's insulin unit conversion, pmol per U
EAT_RATE_G_PER_MIN = 5.0  # simglucose's T1DPatient.EAT_RATE
SAMPLE_TIME_MIN = 1       # simglucose's T1DPatient.SAMPLE_TIME: inputs are held for one minute

INTEGRATORS = ("rk4", "dopri5")
DEFAULT_RK4_SUBSTEPS = 2


def make_rhs(v: dict[str, float]):
    """The model's right-hand side with one patient's parameters bound.

    ``rhs(x, d, ins, aa, cc, bD, dD, vm0, vmx)``: ``x`` the 13 states; ``d`` carbohydrate intake,
    mg/min; ``ins`` insulin into the subcutaneous depot, pmol/kg/min; ``aa, cc, bD, dD`` the
    gastric-emptying shape terms for the current meal (``aa is None``: no meal yet, kgut = kmax);
    ``vm0, vmx`` the (exercise-scaled) peripheral utilisation parameters. Returns dx/dt as a list.
    """
    kmax, kmin, kabs, f, bw = v["kmax"], v["kmin"], v["kabs"], v["f"], v["BW"]
    kp1, kp2, kp3, fsnc = v["kp1"], v["kp2"], v["kp3"], v["Fsnc"]
    ke1, ke2, k1, k2, km0 = v["ke1"], v["ke2"], v["k1"], v["k2"], v["Km0"]
    m1, m2, m4, m30 = v["m1"], v["m2"], v["m4"], v["m30"]
    ka1, ka2, kd, vi, ib = v["ka1"], v["ka2"], v["kd"], v["Vi"], v["Ib"]
    p2u, ki, ksc = v["p2u"], v["ki"], v["ksc"]
    half = (kmax - kmin) / 2
    m2m4 = m2 + m4
    m1m30 = m1 + m30
    ka1kd = ka1 + kd
    fkabs = f * kabs  # Rat = f*kabs*Qgut/BW, same operation order as simglucose

    def rhs(x, d, ins, aa, cc, bD, dD, vm0, vmx):
        x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12 = x
        qsto = x0 + x1
        if aa is None:
            kgut = kmax
        else:
            kgut = kmin + half * (tanh(aa * (qsto - bD)) - tanh(cc * (qsto - dD)) + 2)
        # stomach solid, stomach liquid, intestine
        dx0 = -kmax * x0 + d
        dx1 = kmax * x0 - x1 * kgut
        dx2 = kgut * x1 - kabs * x2
        # plasma glucose: EGP (>= 0) + appearance - insulin-independent use - renal - exchange
        rat = fkabs * x2 / bw
        egp = kp1 - kp2 * x3 - kp3 * x8
        if egp < 0:
            egp = 0
        et = ke1 * (x3 - ke2) if x3 > ke2 else 0
        dx3 = egp + rat - fsnc - et - k1 * x3 + k2 * x4 if x3 >= 0 else 0.0
        # tissue glucose: insulin-dependent (Michaelis-Menten) utilisation
        uid = (vm0 + vmx * x6) * x4 / (km0 + x4)
        dx4 = -uid + k1 * x3 - k2 * x4 if x4 >= 0 else 0.0
        # insulin kinetics
        dx5 = -m2m4 * x5 + m1 * x9 + ka1 * x10 + ka2 * x11 if x5 >= 0 else 0.0
        it = x5 / vi
        dx6 = -p2u * x6 + p2u * (it - ib)
        dx7 = -ki * (x7 - it)
        dx8 = -ki * (x8 - x7)
        dx9 = -m1m30 * x9 + m2 * x5 if x9 >= 0 else 0.0
        # subcutaneous insulin depot, fed by the pump
        dx10 = ins - ka1kd * x10 if x10 >= 0 else 0.0
        dx11 = kd * x10 - ka2 * x11 if x11 >= 0 else 0.0
        # subcutaneous glucose (what a CGM sees)
        dx12 = -ksc * x12 + ksc * x3 if x12 >= 0 else 0.0
        return [dx0, dx1, dx2, dx3, dx4, dx5, dx6, dx7, dx8, dx9, dx10, dx11, dx12]

    return rhs


# ---- integrators over one input-hold interval ---------------------------------------------------

def rk4(rhs, y, h_total, n, args):
    """Classic fixed-step RK4: ``n`` steps of ``h_total / n``."""
    h = h_total / n
    h2 = h / 2
    h6 = h / 6
    for _ in range(n):
        k1 = rhs(y, *args)
        k2 = rhs([a + h2 * b for a, b in zip(y, k1, strict=True)], *args)
        k3 = rhs([a + h2 * b for a, b in zip(y, k2, strict=True)], *args)
        k4 = rhs([a + h * b for a, b in zip(y, k3, strict=True)], *args)
        y = [a + h6 * (b1 + 2 * b2 + 2 * b3 + b4) for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4, strict=True)]
    return y


# Dormand-Prince 5(4) coefficients, as in Hairer's DOPRI5 (the Fortran scipy's ode('dopri5') wraps).
_A21 = 0.2
_A31, _A32 = 3.0 / 40.0, 9.0 / 40.0
_A41, _A42, _A43 = 44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0
_A51, _A52, _A53, _A54 = 19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0
_A61, _A62, _A63 = 9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0
_A64, _A65 = 49.0 / 176.0, -5103.0 / 18656.0
_A71, _A73, _A74, _A75, _A76 = 35.0 / 384.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0
_E1, _E3, _E4 = 71.0 / 57600.0, -71.0 / 16695.0, 71.0 / 1920.0
_E5, _E6, _E7 = -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0


def dopri5(rhs, y, h_total, args, rtol=1e-6, atol=1e-12, max_steps=500):
    """Adaptive Dormand-Prince 5(4) over ``[0, h_total]``, a port of Hairer's DOPRI5 with the settings
    scipy's ``ode(...).set_integrator('dopri5')`` uses by default (rtol 1e-6, atol 1e-12, safety 0.9,
    step factors 0.2..10, beta 0.04, initial step from HINIT, hmax = the interval). Started afresh
    for each interval, as scipy does on each ``integrate`` call, so it takes the same steps."""
    n = len(y)
    x = 0.0
    xend = h_total
    hmax = h_total
    safe, facc1, facc2, beta = 0.9, 1.0 / 0.2, 1.0 / 10.0, 0.04
    expo1 = 0.2 - beta * 0.75
    k1 = rhs(y, *args)
    # HINIT
    dnf = dny = 0.0
    for yi, fi in zip(y, k1, strict=True):
        sk = atol + rtol * abs(yi)
        dnf += (fi / sk) ** 2
        dny += (yi / sk) ** 2
    h = 1.0e-6 if (dnf <= 1e-10 or dny <= 1e-10) else sqrt(dny / dnf) * 0.01
    h = min(h, hmax)
    f1 = rhs([a + h * b for a, b in zip(y, k1, strict=True)], *args)
    der2 = 0.0
    for yi, a, b in zip(y, f1, k1, strict=True):
        sk = atol + rtol * abs(yi)
        der2 += ((a - b) / sk) ** 2
    der2 = sqrt(der2) / h
    der12 = max(abs(der2), sqrt(dnf))
    h1 = max(1.0e-6, abs(h) * 1.0e-3) if der12 <= 1e-15 else (0.01 / der12) ** (1.0 / 5)
    h = min(100 * abs(h), h1, hmax)
    # core integrator
    facold = 1.0e-4
    last = reject = False
    naccpt = nstep = 0
    while True:
        if nstep > max_steps:
            raise RuntimeError(f"dopri5: more than {max_steps} steps in one interval")
        if (x + 1.01 * h - xend) > 0:
            h = xend - x
            last = True
        nstep += 1
        k2 = rhs([a + h * _A21 * b for a, b in zip(y, k1, strict=True)], *args)
        k3 = rhs([a + h * (_A31 * b1 + _A32 * b2) for a, b1, b2 in zip(y, k1, k2, strict=True)], *args)
        k4 = rhs([a + h * (_A41 * b1 + _A42 * b2 + _A43 * b3)
                  for a, b1, b2, b3 in zip(y, k1, k2, k3, strict=True)], *args)
        k5 = rhs([a + h * (_A51 * b1 + _A52 * b2 + _A53 * b3 + _A54 * b4)
                  for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4, strict=True)], *args)
        k6 = rhs([a + h * (_A61 * b1 + _A62 * b2 + _A63 * b3 + _A64 * b4 + _A65 * b5)
                  for a, b1, b2, b3, b4, b5 in zip(y, k1, k2, k3, k4, k5, strict=True)], *args)
        y1 = [a + h * (_A71 * b1 + _A73 * b3 + _A74 * b4 + _A75 * b5 + _A76 * b6)
              for a, b1, b3, b4, b5, b6 in zip(y, k1, k3, k4, k5, k6, strict=True)]
        k7 = rhs(y1, *args)
        err = 0.0
        for a, a1, b1, b3, b4, b5, b6, b7 in zip(y, y1, k1, k3, k4, k5, k6, k7, strict=True):
            e = (_E1 * b1 + _E3 * b3 + _E4 * b4 + _E5 * b5 + _E6 * b6 + _E7 * b7) * h
            sk = atol + rtol * max(abs(a), abs(a1))
            err += (e / sk) ** 2
        err = sqrt(err / n)
        fac11 = err ** expo1
        fac = fac11 / facold ** beta
        fac = max(facc2, min(facc1, fac / safe))
        hnew = h / fac
        if err <= 1.0:
            facold = max(err, 1.0e-4)
            naccpt += 1
            k1 = k7
            y = y1
            x = x + h
            if last:
                return y
            if abs(hnew) > hmax:
                hnew = hmax
            if reject:
                hnew = min(abs(hnew), abs(h))
            reject = False
        else:
            hnew = h / min(facc1, fac11 / safe)
            reject = True
            last = False
        h = hnew


# ---- the patient --------------------------------------------------------------------------------

class Patient:
    """One virtual patient, stepped minute by minute like simglucose's ``T1DPatient``.

    ``integrator``: "dopri5" (default; simglucose's own integrator, ported) or "rk4" (fixed step,
    ``substeps`` steps per minute; faster, with a small integration error).

    Inputs per minute: carbohydrate *announced* in g (eaten at 5 g/min from then on, simglucose's
    meal logic), insulin delivered in U/min (all of it enters the subcutaneous depot), and an
    optional :class:`~hil.patient.exercise.Exercise`. Outputs: ``glucose_mgdl`` (plasma, Gp/Vg)
    and ``interstitial_mgdl`` (Gs/Vg, what a CGM measures and what simglucose reports as BG).
    """

    def __init__(self, params: PatientParams, init_state=None, t0: float = 0.0,
                 integrator: str = "dopri5", substeps: int = DEFAULT_RK4_SUBSTEPS):
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}")
        if substeps < 1:
            raise ValueError("substeps must be >= 1")
        self.params = params
        self.integrator = integrator
        self.substeps = substeps
        self._init_state = None if init_state is None else [float(a) for a in init_state]
        if self._init_state is not None and len(self._init_state) != 13:
            raise ValueError("init_state needs 13 values")
        self._t0 = float(t0)
        v = params.values
        self._rhs = make_rhs(v)
        self._b, self._d = v["b"], v["d"]
        self._bw, self._vg = v["BW"], v["Vg"]
        self._vm0, self._vmx = v["Vm0"], v["Vmx"]
        self.reset()

    # ---- construction ----
    @classmethod
    def from_name(cls, name: str, **kwargs) -> Patient:
        """E.g. ``Patient.from_name("adult#003")``; kwargs go to the constructor."""
        return cls(load(name), **kwargs)

    @classmethod
    def names(cls) -> list[str]:
        return list(load_all())

    @classmethod
    def cohort(cls, group: str | None = None, **kwargs) -> list[Patient]:
        """All 30 patients (or one group: "adolescent", "adult", "child"), fresh, in CSV order."""
        return [cls(p, **kwargs) for p in load_all().values() if group is None or p.group == group]

    def reset(self) -> None:
        """Back to the initial state (simglucose's T1DPatient.reset without random_init_bg)."""
        self.state: list[float] = list(self._init_state if self._init_state is not None else self.params.x0)
        self.t = self._t0
        self._last_qsto = self.state[0] + self.state[1]
        self._last_foodtaken = 0.0
        self._last_cho = 0.0
        self.is_eating = False
        self.planned_meal = 0.0
        self.exercise: Exercise = REST

    # ---- the patient's numbers ----
    @property
    def name(self) -> str:
        return self.params.name

    @property
    def basal_u_per_min(self) -> float:
        """simglucose's basal: u2ss * BW / 6000 U/min (holds the initial steady state)."""
        return self.params.basal_u_per_min

    @property
    def basal_u_per_h(self) -> float:
        return self.params.basal_u_per_h

    @property
    def cr(self) -> float:
        return self.params.quest.cr

    @property
    def cf(self) -> float:
        return self.params.quest.cf

    @property
    def tdi(self) -> float:
        return self.params.quest.tdi

    @property
    def glucose_mgdl(self) -> float:
        """Plasma glucose Gp/Vg, mg/dL."""
        return self.state[3] / self._vg

    @property
    def interstitial_mgdl(self) -> float:
        """Subcutaneous glucose Gs/Vg, mg/dL: what a CGM samples, and simglucose's ``observation.Gsub``
        (which its env records as "BG")."""
        return self.state[12] / self._vg

    @property
    def insulin_on_board_u(self) -> float:
        """Insulin still in the subcutaneous depot (Isc1 + Isc2), U."""
        return (self.state[10] + self.state[11]) * self._bw / U_TO_PMOL

    # ---- stepping ----
    def step(self, carbs_g: float = 0.0, insulin_u_per_min: float = 0.0,
             exercise: Exercise | None = None) -> None:
        """One minute, exactly simglucose's ``T1DPatient.step(Action(CHO=carbs_g, insulin=...))``.

        ``carbs_g`` is a meal announced now (added to what is still to be eaten; eaten at up to
        5 g/min). ``insulin_u_per_min`` is held for the minute: a 2 U bolus delivered within this
        minute is 2.0 (plus the basal). ``exercise``, if given, becomes the current activity level.
        """
        if carbs_g < 0 or insulin_u_per_min < 0:
            raise ValueError("carbs and insulin must be >= 0")
        if exercise is not None:
            self.exercise = exercise
        # simglucose's _announce_meal
        self.planned_meal += carbs_g
        if self.planned_meal > 0:
            to_eat = min(EAT_RATE_G_PER_MIN, self.planned_meal)
            self.planned_meal = max(0.0, self.planned_meal - to_eat)
        else:
            to_eat = 0.0
        # eating starts / goes on / ends; Dbar is the meal's total being digested, mg
        if to_eat > 0 and self._last_cho <= 0:
            self._last_qsto = self.state[0] + self.state[1]
            self._last_foodtaken = 0.0
            self.is_eating = True
        if self.is_eating:
            self._last_foodtaken += to_eat
        if to_eat <= 0 and self._last_cho > 0:
            self.is_eating = False
        self._last_cho = to_eat
        dbar = self._last_qsto + self._last_foodtaken * 1000.0
        if dbar > 0:
            aa = 5 / (2 * dbar * (1 - self._b))
            cc = 5 / (2 * dbar * self._d)
            bD, dD = self._b * dbar, self._d * dbar
        else:
            aa = cc = bD = dD = None
        ex = self.exercise
        args = (to_eat * 1000.0,                               # g/min -> mg/min
                insulin_u_per_min * U_TO_PMOL / self._bw,      # U/min -> pmol/kg/min
                aa, cc, bD, dD,
                self._vm0 * ex.glucose_uptake, self._vmx * ex.insulin_sensitivity)
        if self.integrator == "rk4":
            self.state = rk4(self._rhs, self.state, float(SAMPLE_TIME_MIN), self.substeps, args)
        else:
            self.state = dopri5(self._rhs, self.state, float(SAMPLE_TIME_MIN), args)
        self.t += SAMPLE_TIME_MIN

    def advance(self, minutes: int, insulin_u: float = 0.0, carbs_g: float = 0.0,
                exercise: Exercise | None = None) -> None:
        """``minutes`` one-minute steps with ``insulin_u`` units delivered evenly over them and
        ``carbs_g`` announced at the first. For a plant that reports delivered units per interval."""
        if minutes < 1 or int(minutes) != minutes:
            raise ValueError("minutes must be a positive whole number")
        rate = insulin_u / minutes
        for i in range(int(minutes)):
            self.step(carbs_g if i == 0 else 0.0, rate, exercise)

    def __repr__(self) -> str:
        return f"Patient({self.name!r}, t={self.t:g} min, BG={self.glucose_mgdl:.1f} mg/dL)"
