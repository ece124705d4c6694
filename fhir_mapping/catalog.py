"""The measure catalog: one entry per clinic measure, with codes, units, ranges and MCIDs.

Facts and their verification status come from shared/reference/pt-measures.md (section and
row numbers in `source`). Status is kept per code: a code goes out as a LOINC/SNOMED coding
only when its code *and* meaning were seen (`verified`, `verified-secondary`). Where a
reference row is PARTIAL only because of something other than the code (e.g. the unit of
55411-3, the movement-specific half of row 3), the code is marked verified and the gap is in
`note`; where the code's own name/meaning was not seen (38214-3, 64098-7) it is `partial` and
is never sent. Every measure also carries our own CodeSystem code (codes.PT) and text.
https://hl7.org/fhir/R4B/observation.html#code
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from fhir_mapping import codes
from fhir_mapping.units import accepted

SENT = ("verified", "verified-secondary")


@dataclass(frozen=True, slots=True)
class StdCode:
    """One LOINC or SNOMED code with its verification status and source."""

    system: str
    code: str
    display: str
    status: str  # verified | verified-secondary | partial
    source: str
    side: str | None = None  # only for this side (grip strength left/right)
    protocol: str | None = None  # only when the test followed this protocol

    @property
    def sent(self) -> bool:
        """Whether this code goes out as a coding."""
        return self.status in SENT


@dataclass(frozen=True, slots=True)
class Grade:
    """One ordinal grade (MMT, Modified Ashworth) and its rank for charting."""

    code: str
    display: str
    rank: float


@dataclass(frozen=True, slots=True)
class Measure:
    """One clinic measure and everything needed to code, check and interpret it."""

    key: str
    display: str
    category: str  # observation-category code
    unit: str | None  # UCUM unit the value is stored in; None for graded measures
    low: float | None = None
    high: float | None = None
    integer: bool = False
    grades: tuple[Grade, ...] = ()
    laterality: str = "forbidden"  # required | optional | forbidden
    site: str = "none"  # fixed (implied by the measure) | required | optional | none
    fixed_site: str | None = None
    method: str = ""
    codes: tuple[StdCode, ...] = ()
    mcid: float | None = None
    mcid_kind: str = "absolute"  # absolute (in the unit) | percent (of baseline)
    mcid_source: str = ""
    mdc: float | None = None  # minimal detectable change, in the unit (the trend threshold)
    mdc_source: str = ""
    direction: str | None = "higher"  # which way is better: higher | lower | None
    source: str = ""
    note: str = ""
    protocols: tuple[str, ...] = field(default=())

    @property
    def value_type(self) -> str:
        """valueQuantity, or valueCodeableConcept for graded measures."""
        return "CodeableConcept" if self.grades else "Quantity"

    @property
    def status(self) -> str:
        """The best status among the measure's codes ('unverified' when it has none)."""
        for wanted in ("verified", "verified-secondary", "partial"):
            if any(c.status == wanted for c in self.codes):
                return wanted
        return "unverified"

    @property
    def input_units(self) -> tuple[str, ...]:
        """Units a clinic may send, converted to `unit`."""
        return accepted(self.unit) if self.unit else ()

    def sent_codes(self, side: str | None, protocol: str | None) -> list[StdCode]:
        """The standard codes to send for this side and protocol."""
        return [c for c in self.codes if c.sent and c.side in (None, side) and c.protocol in (None, protocol)]


def _loinc(code: str, display: str, status: str, source: str, **kw: str) -> StdCode:
    return StdCode(codes.LOINC, code, display, status, source, **kw)


def _sct(code: str, display: str, status: str, source: str, **kw: str) -> StdCode:
    return StdCode(codes.SNOMED, code, display, status, source, **kw)


def _grades_mmt() -> tuple[Grade, ...]:
    out = [Grade("0", "0 - no contraction", 0.0)]
    for n in range(1, 6):
        if n > 1:
            out.append(Grade(f"{n}-", f"{n}- (Oxford/MRC)", n - 0.33))
        out.append(Grade(str(n), f"{n} (Oxford/MRC)", float(n)))
        if n < 5:
            out.append(Grade(f"{n}+", f"{n}+ (Oxford/MRC)", n + 0.33))
    return tuple(out)


MMT_GRADES = _grades_mmt()
ASHWORTH_GRADES = tuple(
    Grade(c, f"Modified Ashworth {c}", r)
    for c, r in (("0", 0.0), ("1", 1.0), ("1+", 1.5), ("2", 2.0), ("3", 3.0), ("4", 4.0))
)

# (joint, movement): plausible goniometric range in degrees (AAOS normal values with room for
# hypermobility; knee extension may be negative for an extension deficit).
ROM: dict[tuple[str, str], tuple[float, float]] = {
    ("shoulder", "flexion"): (0, 190),
    ("shoulder", "extension"): (0, 90),
    ("shoulder", "abduction"): (0, 190),
    ("shoulder", "external_rotation"): (-20, 120),
    ("shoulder", "internal_rotation"): (0, 100),
    ("elbow", "flexion"): (0, 160),
    ("elbow", "extension"): (-30, 20),
    ("wrist", "flexion"): (0, 100),
    ("wrist", "extension"): (0, 100),
    ("hip", "flexion"): (0, 150),
    ("hip", "extension"): (-20, 45),
    ("hip", "abduction"): (0, 60),
    ("knee", "flexion"): (-20, 170),
    ("knee", "extension"): (-60, 20),
    ("ankle", "dorsiflexion"): (-40, 45),
    ("ankle", "plantarflexion"): (0, 70),
}
ROM_CODE = _sct(
    "364564000",
    "Range of joint movement (observable entity)",
    "verified",
    "reference §2 row 3: SNOMED International editorial template (confluence.ihtsdotools.org)",
)

# Our body-site codes (text-level; SNOMED only where the reference verified one).
BODY_SITES: dict[str, tuple[str, StdCode | None]] = {
    "hand": (
        "Hand structure",
        _sct(
            "85562004",
            "Hand structure (body structure)",
            "verified-secondary",
            "reference §1.2: BIH-CEI/T-CABS grip example",
        ),
    ),
    "upper_limb": (
        "Upper limb structure",
        _sct(
            "53120007",
            "Upper limb structure",
            "verified-secondary",
            "reference §1.2: hl7ch/ch-ems StrokeBefund.fsh",
        ),
    ),
    **{j: (j.replace("_", " ").capitalize(), None) for j in sorted({j for j, _ in ROM})},
    **{
        m: (m.replace("_", " ").capitalize(), None)
        for m in (
            "quadriceps",
            "hamstrings",
            "gluteus_maximus",
            "gluteus_medius",
            "hip_flexors",
            "hip_adductors",
            "ankle_dorsiflexors",
            "ankle_plantarflexors",
            "biceps",
            "triceps",
            "deltoid",
            "wrist_flexors",
            "wrist_extensors",
            "elbow_flexors",
            "lower_back",
            "neck",
            "tibialis_anterior",
            "gastrocnemius",
        )
    },
}


def _rom_entries() -> list[Measure]:
    out = []
    for (joint, movement), (low, high) in ROM.items():
        out.append(
            Measure(
                key=f"joint_rom_{joint}_{movement}",
                display=f"{joint.capitalize()} {movement.replace('_', ' ')} range of motion",
                category="exam",
                unit="deg",
                low=low,
                high=high,
                laterality="required",
                site="fixed",
                fixed_site=joint,
                method="goniometry (active or passive in `method`)",
                codes=(ROM_CODE,),
                direction="higher",
                source="reference §2 row 3",
                note="movement-specific LOINC/SNOMED observables UNVERIFIED: movement in our code",
            )
        )
    return out


_SURVEY = "survey"
MEASURES: tuple[Measure, ...] = (
    Measure(
        "pain_nrs",
        "Pain severity 0-10 numeric rating",
        _SURVEY,
        "{score}",
        0,
        10,
        integer=True,
        laterality="optional",
        site="optional",
        method="patient report",
        codes=(
            _loinc(
                "72514-3",
                "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                "verified",
                "reference §2 row 1 (healthassure.in LOINC mirror; hl7-be ScalePain.fsh)",
            ),
        ),
        mcid=2,
        mcid_source="Farrar 2001 Pain 94:149 (2 points; exact figure PARTIAL in the reference)",
        direction="lower",
        source="reference §2 row 1",
        note="56840-2 is DISCOURAGED: never sent",
    ),
    Measure(
        "pain_vas",
        "Pain visual analogue scale",
        _SURVEY,
        "mm",
        0,
        100,
        laterality="optional",
        site="optional",
        method="100 mm VAS line",
        codes=(
            _loinc(
                "38214-3",
                "Pain Score made using a visual analog scale (IHE PCC)",
                "partial",
                "reference §2 row 2: official LOINC long name not seen",
            ),
            _sct(
                "446661009",
                "Visual analog scale score (observable entity)",
                "verified-secondary",
                "reference §8.1 (hl7-be core-clinical be-vs-score)",
            ),
        ),
        direction="lower",
        source="reference §2 row 2, §8.1",
        note="446661009 is a generic VAS score; text says pain",
    ),
    *_rom_entries(),
    Measure(
        "mmt_grade",
        "Manual muscle testing grade (Oxford/MRC 0-5)",
        "exam",
        None,
        grades=MMT_GRADES,
        laterality="required",
        site="required",
        method="manual muscle testing",
        direction="higher",
        source="reference §2 row 4",
        note="no LOINC/SNOMED code found (UNVERIFIED)",
    ),
    Measure(
        "grip_strength",
        "Grip strength (dynamometer)",
        "exam",
        "kgf",
        0,
        120,
        laterality="optional",
        site="fixed",
        fixed_site="hand",
        method="hand dynamometer",
        codes=(
            _loinc(
                "83173-5",
                "Grip strength Hand - left Dynamometer",
                "verified",
                "reference §2 row 5 (loinc.org/83145-3 panel)",
                side="left",
            ),
            _loinc(
                "83174-3",
                "Grip strength Hand - right Dynamometer",
                "verified",
                "reference §2 row 5b (loinc.org/83145-3 panel)",
                side="right",
            ),
            _sct(
                "251433001",
                "Grip strength (observable entity)",
                "verified-secondary",
                "reference §2 row 5c (BIH-CEI/T-CABS example)",
            ),
        ),
        direction="higher",
        source="reference §2 rows 5-5c",
        note="a force: kgf (dials read kg), [lbf_av] as LOINC reports it, N",
    ),
    Measure(
        "berg_balance_total",
        "Berg Balance Scale total",
        _SURVEY,
        "{score}",
        0,
        56,
        integer=True,
        method="BBS protocol (14 items 0-4)",
        codes=(
            _sct(
                "404933001",
                "Berg balance test",
                "verified-secondary",
                "reference §8.1 (OHDSI Vocabulary load_stage.sql); names the test, not the total",
            ),
        ),
        mcid=6.5,
        mcid_source="Clin Rehabil 2022 doi 10.1177/02692155221108552 (acute stroke, anchor 6.5-12.5)",
        mdc=6,
        mdc_source="Stevenson 2001 Aust J Physiother 47:29 (90 % confidence, inpatient stroke; reference §4)",
        source="reference §2 row 6, §8.1",
    ),
    Measure(
        "tug_time",
        "Timed Up and Go",
        "exam",
        "s",
        0,
        300,
        method="stopwatch, 3 m / 10 ft",
        codes=(
            _loinc(
                "89423-8",
                "Time to rise from chair, walk 10 feet and back, and return to sitting [TUG]",
                "verified",
                "reference §2 row 7 (loinc.org/89422-0 panel; findacode)",
            ),
        ),
        direction="lower",
        source="reference §2 row 7",
        note="assistive device in extension assistive-device",
    ),
    Measure(
        "gait_speed_10mwt",
        "10 metre walk test gait speed",
        "exam",
        "m/s",
        0,
        3,
        method="10 m timed walk",
        mcid=0.18,
        mcid_source="Clin Rehabil 2022 (acute stroke, anchor 0.18-0.25 m/s)",
        source="reference §2 row 8",
        note="no 10MWT code (UNVERIFIED); 83172-7 is the NIH 4 m test, not sent",
    ),
    Measure(
        "six_min_walk_distance",
        "Six minute walk distance",
        "exam",
        "m",
        0,
        1000,
        method="ATS 2002 protocol",
        codes=(
            _loinc(
                "64098-7",
                "Walking distance 6 minutes",
                "partial",
                "reference §2 row 9: official LOINC long name not seen",
            ),
            _sct("165263003", "Walking distance (observable entity)", "partial", "reference §2 row 9"),
        ),
        source="reference §2 row 9",
    ),
    Measure(
        "five_times_sit_to_stand",
        "Five times sit to stand",
        "exam",
        "s",
        0,
        120,
        method="stopwatch, arms crossed",
        direction="lower",
        source="reference §2 row 10",
    ),
    Measure(
        "chair_stand_30s",
        "30 second chair stand",
        "exam",
        "{#}/(30.s)",
        0,
        50,
        integer=True,
        method="17-in chair, no arms (CDC STEADI)",
        codes=(
            _loinc(
                "66247-8",
                "Sit to stand frequency in 30 seconds",
                "verified",
                "reference §2 row 11 (loinc.org/66247-8)",
            ),
        ),
        source="reference §2 row 11",
    ),
    Measure(
        "fga_total",
        "Functional Gait Assessment total",
        _SURVEY,
        "{score}",
        0,
        30,
        integer=True,
        method="FGA protocol (10 items 0-3)",
        source="reference §2 row 12",
    ),
    Measure(
        "dgi_total",
        "Dynamic Gait Index total",
        _SURVEY,
        "{score}",
        0,
        24,
        integer=True,
        method="DGI protocol (8 items 0-3)",
        source="reference §2 row 13",
    ),
    Measure(
        "abc_scale",
        "Activities-specific Balance Confidence scale",
        _SURVEY,
        "%",
        0,
        100,
        method="self-report (16 items 0-100, mean)",
        source="reference §2 row 14",
    ),
    Measure(
        "lefs_total",
        "Lower Extremity Functional Scale",
        _SURVEY,
        "{score}",
        0,
        80,
        integer=True,
        method="self-report (20 items 0-4)",
        mcid=9,
        mcid_source="Binkley 1999 Phys Ther 79:371 (secondary)",
        mdc=9,
        mdc_source="Binkley 1999 Phys Ther 79:371 (secondary; reference §4)",
        source="reference §2 row 15",
    ),
    Measure(
        "odi_score",
        "Oswestry Disability Index (%)",
        _SURVEY,
        "{score}",
        0,
        100,
        method="ODI v2.1a (10 items 0-5)",
        codes=(
            _loinc(
                "97909-6",
                "Oswestry disability index score ODI",
                "verified",
                "reference §2 row 16 (loinc.org)",
            ),
        ),
        mcid=18,
        mcid_kind="percent",
        mcid_source="Mannion 2005 Eur Spine J (>=18 % reduction from baseline)",
        direction="lower",
        source="reference §2 row 16",
    ),
    Measure(
        "ndi_score",
        "Neck Disability Index (%)",
        _SURVEY,
        "%",
        0,
        100,
        method="self-report (10 items 0-5)",
        mcid=13.39,
        mcid_source="Auffinger 2013 PLoS One (ACDF; range 4.83-13.39)",
        direction="lower",
        source="reference §2 row 17",
    ),
    Measure(
        "quickdash_score",
        "QuickDASH disability/symptom score",
        _SURVEY,
        "{score}",
        0,
        100,
        laterality="optional",
        method="self-report (11 items 1-5)",
        mcid=14,
        mcid_source="Sorensen 2013 J Hand Surg Am 38:641 (secondary)",
        mdc=13,
        mdc_source="F.A. Davis text as cited in reference §4 (secondary)",
        direction="lower",
        source="reference §2 row 18",
    ),
    Measure(
        "promis_pf_tscore",
        "PROMIS physical function T-score",
        _SURVEY,
        "{score}",
        10,
        90,
        method="PROMIS",
        codes=(
            _loinc(
                "71959-1",
                "PROMIS-29 Physical function score T-score",
                "verified-secondary",
                "reference §2 row 19 (healthassure.in)",
                protocol="promis-29",
            ),
            _loinc(
                "77874-6",
                "PROMIS physical function - version 1.2 Tscore",
                "verified-secondary",
                "reference §2 row 19 (healthassure.in)",
                protocol="promis-pf-v1.2",
            ),
        ),
        protocols=("promis-29", "promis-pf-v1.2"),
        source="reference §2 row 19",
        note="LOINC only for the form named in `protocol`; other short forms UNVERIFIED",
    ),
    Measure(
        "promis29_pf_raw",
        "PROMIS-29 physical function raw score",
        _SURVEY,
        "{score}",
        4,
        20,
        integer=True,
        method="PROMIS-29",
        codes=(
            _loinc(
                "71960-9",
                "PROMIS-29 Physical function score",
                "verified-secondary",
                "reference §2 row 19 (healthassure.in)",
            ),
        ),
        source="reference §2 row 19",
    ),
    Measure(
        "fugl_meyer_ue_motor",
        "Fugl-Meyer upper extremity motor",
        _SURVEY,
        "{score}",
        0,
        66,
        integer=True,
        laterality="optional",
        method="FMA protocol (33 items 0-2)",
        mcid=4.5,
        mcid_source="NINDS CDE Fugl-Meyer notice (4.5-7.0, secondary)",
        source="reference §2 row 20",
    ),
    Measure(
        "fugl_meyer_le_motor",
        "Fugl-Meyer lower extremity motor",
        _SURVEY,
        "{score}",
        0,
        34,
        integer=True,
        laterality="optional",
        method="FMA protocol (17 items 0-2)",
        source="reference §2 row 20",
    ),
    Measure(
        "fugl_meyer_total",
        "Fugl-Meyer assessment total",
        _SURVEY,
        "{score}",
        0,
        226,
        integer=True,
        laterality="optional",
        method="FMA protocol",
        source="reference §2 row 20",
    ),
    Measure(
        "modified_ashworth",
        "Modified Ashworth Scale",
        "exam",
        None,
        grades=ASHWORTH_GRADES,
        laterality="required",
        site="required",
        method="passive stretch",
        direction="lower",
        source="reference §2 row 21",
        note="grades coded, never numeric (1+)",
    ),
    Measure(
        "single_leg_stance",
        "Single leg stance time",
        "exam",
        "s",
        0,
        120,
        laterality="required",
        method="stopwatch (eyes open/closed in `method`)",
        codes=(
            _loinc(
                "66569-5",
                "Time participant holds position during first one leg stand",
                "verified",
                "reference §8.1 (loinc.org/64388-2, PhenX balance protocol 170801)",
                protocol="phenx-170801",
            ),
        ),
        protocols=("phenx-170801",),
        source="reference §2 row 22, §8.1",
        note="66569-5 only for the PhenX/Health ABC protocol (eyes open, <= 30 s)",
    ),
    Measure(
        "joint_position_error",
        "Joint position error",
        "exam",
        "deg",
        0,
        90,
        laterality="required",
        site="required",
        method="goniometer/inclinometer/laser",
        direction="lower",
        source="reference §2 row 23",
    ),
    Measure(
        "surface_emg",
        "Surface EMG amplitude",
        "procedure",
        "uV",
        0,
        10000,
        laterality="optional",
        site="optional",
        method="sEMG device",
        direction=None,
        source="reference §2 row 24",
    ),
    Measure(
        "imu_joint_angle",
        "Joint angle (inertial sensor)",
        "exam",
        "deg",
        -180,
        360,
        laterality="optional",
        site="optional",
        method="IMU",
        direction=None,
        source="local (sensor series)",
    ),
    Measure(
        "force_plate_sway",
        "Centre of pressure sway (force plate)",
        "exam",
        "mm",
        -500,
        500,
        method="force plate",
        direction=None,
        source="local (sensor series)",
    ),
    Measure(
        "steps_daily",
        "Steps per day",
        "activity",
        "/d",
        0,
        100000,
        integer=True,
        method="wearable/pedometer",
        codes=(
            _loinc(
                "41950-7",
                "Number of steps in 24 hour Measured",
                "verified",
                "reference §2 row 25 (PA IG Observation-ExampleDailySteps)",
            ),
        ),
        source="reference §2 row 25",
    ),
    Measure(
        "exercise_minutes",
        "Exercise duration",
        "activity",
        "min",
        0,
        1440,
        method="device/self report",
        codes=(
            _loinc("55411-3", "Exercise duration", "verified", "reference §2 row 27 (PA IG Vocabulary.fsh)"),
        ),
        source="reference §2 row 27",
        note="unit min is ours: LOINC unit UNVERIFIED",
    ),
    Measure(
        "evs_days_per_week",
        "Days per week of moderate to strenuous exercise",
        "activity",
        "d/wk",
        0,
        7,
        integer=True,
        method="patient report",
        codes=(
            _loinc(
                "89555-7",
                "How many days per week did you engage in moderate to strenuous physical "
                "activity in the last 30 days",
                "verified",
                "reference §2 row 26a (PA IG)",
            ),
        ),
        source="reference §2 row 26a",
    ),
    Measure(
        "evs_minutes_per_day",
        "Minutes per day of moderate to strenuous exercise",
        "activity",
        "min/d",
        0,
        1440,
        method="patient report",
        codes=(
            _loinc(
                "68516-4",
                "On those days that you engage in moderate to strenuous exercise, how many "
                "minutes, on average, do you exercise",
                "verified",
                "reference §2 row 26b (PA IG)",
            ),
        ),
        source="reference §2 row 26b",
    ),
    Measure(
        "evs_minutes_per_week",
        "Minutes per week of moderate to vigorous activity",
        "activity",
        "min/wk",
        0,
        10080,
        method="calculated",
        codes=(
            _loinc(
                "82290-8",
                "Frequency of moderate to vigorous aerobic physical activity",
                "verified",
                "reference §2 row 26c (PA IG)",
            ),
        ),
        source="reference §2 row 26c",
    ),
    Measure(
        "strength_days_per_week",
        "Days per week of muscle-strengthening activity",
        "activity",
        "d/wk",
        0,
        7,
        integer=True,
        method="patient report",
        codes=(
            _loinc(
                "82291-6",
                "Frequency of muscle-strengthening physical activity",
                "verified",
                "reference §2 row 26d (PA IG)",
            ),
        ),
        source="reference §2 row 26d",
    ),
)
BY_KEY: dict[str, Measure] = {m.key: m for m in MEASURES}

# Standard code -> the measures it may mean; only unambiguous ones identify a measure on read.
_BY_STD: dict[tuple[str, str], list[tuple[Measure, StdCode]]] = {}
for _m in MEASURES:
    for _c in _m.codes:
        if _c.sent:
            _BY_STD.setdefault((_c.system, _c.code), []).append((_m, _c))


def get(key: str) -> Measure | None:
    """Return the measure with this key, or None."""
    return BY_KEY.get(key)


def recognise(codings: list[dict[str, object]]) -> tuple[Measure, StdCode | None] | None:
    """Identify the measure an Observation.code means: our code first, then a unique standard code."""
    for c in codings:
        if c.get("system") == codes.PT and isinstance(c.get("code"), str) and c["code"] in BY_KEY:
            return BY_KEY[str(c["code"])], None
    for c in codings:
        found = _BY_STD.get((str(c.get("system")), str(c.get("code"))))
        if found and len(found) == 1:
            return found[0]
    return None
