"""Virtual T1D patients: simglucose's 30 UVA/Padova 2008 patients, reimplemented to run fast.

    from hil.patient import Patient
    p = Patient.from_name("adult#001")
    p.step(carbs_g=0, insulin_u_per_min=p.basal_u_per_min)
    p.glucose_mgdl, p.interstitial_mgdl

See docs/patients.md.
"""
from .exercise import REST, Exercise, session
from .params import PatientParams, Quest, load, load_all, patient_names
from .uva_padova import Patient

__all__ = ["Patient", "PatientParams", "Quest", "Exercise", "REST", "session",
           "load", "load_all", "patient_names"]
