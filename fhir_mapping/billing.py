"""Procedure codes a PT session bills (CPT, HCPCS) and billing units by the CMS 8-minute rule.

Each code carries its kind, whether it is timed (billed per 15 minutes) and the public
sources its number and meaning were checked against; the AMA descriptors are copyrighted,
so `display` is our short wording, not the CPT text. Status words as in the measure catalog:
`verified-secondary` = code and meaning seen in the cited public (non-AMA) sources.

Units (Medicare Claims Processing Manual, Pub. 100-04, Chapter 5, §20.2 "Reporting of
Service Units With HCPCS", as quoted at chirocode.com/article.html?id=25388 and
learn.kmcuniversity.com/topic-tag/timed-code/):
- an untimed (service-based) code is 1 unit per session, whatever its minutes;
- the minutes of all timed codes are added: 8-22 minutes = 1 unit, 23-37 = 2, 38-52 = 3, ...
  (units = total // 15, plus 1 if the rest is 8 minutes or more);
- each timed code gets one unit per full 15 minutes of its own; the units left over go to
  the codes with the most remaining minutes (ties: the code performed first).
https://hl7.org/fhir/R4B/procedure.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_mapping import codes

_APTA = "apta.org/your-practice/payment/coding-billing/tiered-evaluation-codes (APTA); CMS MLN Matters MM9782"
_PROC = (
    "whatismedicalinsurancebilling.org/2014/11/proper-billing-of-therapy-cpt-code-97110.html "
    "(each 15 minutes; timed, Claims Processing Manual ch. 5 §20.2)"
)
_ATTENDED = (
    "whatismedicalinsurancebilling.org/2010/07/therapy-cpt-code-97034-97035-97036.html "
    "(each 15 minutes, constant attendance)"
)
_SUPERVISED = "medicarepaymentandreimbursement.com/2010/09/massage-therapy-billing-cpt-97010-97124.html"
_ESTIM = (
    "pt-management.com/compliance/attended-v-unattended-electrical-stimulation; "
    "CMS LCD article A53065 (Outpatient Physical Therapy: 97032 attended, G0283 unattended)"
)


@dataclass(frozen=True, slots=True)
class ProcedureCode:
    """One billable code: which system, what it means, how it is billed, and where that was seen."""

    code: str
    display: str
    kind: str  # evaluation | procedure | attended-modality | supervised-modality
    timed: bool
    source: str
    modalities: tuple[str, ...] = ()  # the modalities (sessions.MODALITIES) this code applies
    system: str = codes.CPT
    status: str = "verified-secondary"
    note: str = ""


PROCEDURE_CODES: tuple[ProcedureCode, ...] = (
    ProcedureCode("97161", "Physical therapy evaluation, low complexity", "evaluation", False, _APTA),
    ProcedureCode("97162", "Physical therapy evaluation, moderate complexity", "evaluation", False, _APTA),
    ProcedureCode("97163", "Physical therapy evaluation, high complexity", "evaluation", False, _APTA),
    ProcedureCode("97164", "Physical therapy re-evaluation", "evaluation", False, _APTA),
    ProcedureCode("97110", "Therapeutic exercise", "procedure", True, _PROC),
    ProcedureCode(
        "97112",
        "Neuromuscular reeducation",
        "procedure",
        True,
        "reference §3.1 (genhealth.ai, codingahead.com, verimedix.com)",
    ),
    ProcedureCode("97113", "Aquatic therapy with therapeutic exercises", "procedure", True, _PROC),
    ProcedureCode("97116", "Gait training", "procedure", True, _PROC),
    ProcedureCode(
        "97140",
        "Manual therapy techniques",
        "procedure",
        True,
        "carecloud.com/cpt-97140 (timed, 15-minute units); codingahead.com/cpt/codes/97140",
    ),
    ProcedureCode(
        "97530",
        "Therapeutic activities",
        "procedure",
        True,
        "chirocode.com/q-a-can-you-swap-out-97140-with-97530 (dynamic activities with patient "
        "participation); medheave.com/physical-therapy-billing-cpt-codes (timed treatment code)",
    ),
    ProcedureCode(
        "97032",
        "Electrical stimulation, attended (manual)",
        "attended-modality",
        True,
        f"{_ATTENDED}; {_ESTIM}",
        modalities=("electrical_stimulation",),
    ),
    ProcedureCode(
        "97033", "Iontophoresis", "attended-modality", True, _ATTENDED, modalities=("iontophoresis",)
    ),
    ProcedureCode("97035", "Ultrasound", "attended-modality", True, _ATTENDED, modalities=("ultrasound",)),
    ProcedureCode(
        "97010",
        "Hot or cold packs",
        "supervised-modality",
        False,
        f"{_SUPERVISED}; immedicaresolutions.com/wiki/97010",
        modalities=("cryotherapy", "hot_pack"),
        note="bundled by Medicare (PFS status B): never paid on its own",
    ),
    ProcedureCode(
        "97012", "Mechanical traction", "supervised-modality", False, _SUPERVISED, modalities=("traction",)
    ),
    ProcedureCode(
        "97014",
        "Electrical stimulation, unattended",
        "supervised-modality",
        False,
        f"pabau.com/procedure-codes/cpt-code-97014; {_ESTIM}",
        modalities=("electrical_stimulation",),
        note="not recognised by Medicare: bill G0283 instead",
    ),
    ProcedureCode(
        "G0283",
        "Electrical stimulation, unattended (Medicare)",
        "supervised-modality",
        False,
        f"{_ESTIM}; codingahead.com/cpt/codes/97014",
        modalities=("electrical_stimulation",),
        system=codes.HCPCS,
        note="HCPCS Level II; Medicare's code for unattended electrical stimulation",
    ),
)
BY_CODE: dict[str, ProcedureCode] = {c.code: c for c in PROCEDURE_CODES}


def codes_for(modality: str) -> list[str]:
    """The codes that bill this modality (attended and unattended told apart by the code)."""
    return [c.code for c in PROCEDURE_CODES if modality in c.modalities]


def timed_units(total_minutes: int) -> int:
    """Units for the total minutes of timed codes in one session (8-22 -> 1, 23-37 -> 2, ...)."""
    return total_minutes // 15 + (1 if total_minutes % 15 >= 8 else 0)


def units(performed: list[tuple[str, int]]) -> dict[str, Any]:
    """Return the units per code for one session's (code, minutes), and how they were found."""
    minutes: dict[str, int] = {}
    for code, mins in performed:
        minutes[code] = minutes.get(code, 0) + mins
    timed = {c: m for c, m in minutes.items() if BY_CODE[c].timed}
    total = sum(timed.values())
    allowed = timed_units(total)
    per_code = {c: m // 15 for c, m in timed.items()}
    left = allowed - sum(per_code.values())
    # Order keeps first-performed first among equal remainders (dicts keep insertion order).
    for code in sorted(timed, key=lambda c: -(timed[c] % 15))[: max(left, 0)]:
        per_code[code] += 1
    lines = [
        {"code": c, "system": BY_CODE[c].system, "minutes": m, "timed": BY_CODE[c].timed}
        | {"units": per_code[c] if BY_CODE[c].timed else 1}
        for c, m in minutes.items()
    ]
    return {
        "rule": "CMS 8-minute rule (Claims Processing Manual ch. 5 §20.2)",
        "timed_minutes": total,
        "timed_units": allowed,
        "lines": [line for line in lines if line["units"] > 0],
        "not_billed": [line["code"] for line in lines if line["units"] == 0],
    }
