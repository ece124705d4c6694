"""Accepted input units, the UCUM code each is stored as, and its conversion to a measure's unit.

Values are stored as the clinician entered them (the number, and the UCUM code of the unit
they used); conversion to the catalog's canonical unit happens when reading (progress), and
the search index canonicalises on its own. Grip strength is a force (LOINC 83173-5/83174-3
report `[lbf_av]`): dynamometer dials read "kg" and "lb" meaning kilogram-force and
pound-force, so those spellings are taken, and stored, as `kgf` and `[lbf_av]`.
https://ucum.org/ucum (unit codes); https://hl7.org/fhir/R4B/datatypes.html#Quantity
"""

from __future__ import annotations

_LB = 0.45359237  # kg per avoirdupois pound (and kgf per lbf)


def _same(code: str, *spellings: str) -> dict[str, tuple[str, float]]:
    return {s: (code, 1.0) for s in (code, *spellings)}


# canonical UCUM code -> {accepted spelling: (UCUM code stored, factor to the canonical unit)}
UNITS: dict[str, dict[str, tuple[str, float]]] = {
    "deg": {**_same("deg", "°", "degree", "degrees"), "rad": ("rad", 57.29577951308232)},
    "s": {**_same("s", "sec", "seconds"), "ms": ("ms", 0.001), "min": ("min", 60.0)},
    "min": {**_same("min", "minutes"), "h": ("h", 60.0), "s": ("s", 1 / 60)},
    "m/s": {
        "m/s": ("m/s", 1.0),
        "cm/s": ("cm/s", 0.01),
        "km/h": ("km/h", 1 / 3.6),
        **_same("[ft_i]/s", "ft/s"),
    },
    "m": {
        "m": ("m", 1.0),
        "cm": ("cm", 0.01),
        "km": ("km", 1000.0),
        **{s: ("[ft_i]", 0.3048) for s in ("[ft_i]", "ft")},
        **{s: ("[yd_i]", 0.9144) for s in ("[yd_i]", "yd")},
    },
    "mm": {"mm": ("mm", 1.0), "cm": ("cm", 10.0)},
    "kg": {"kg": ("kg", 1.0), "g": ("g", 0.001), **{s: ("[lb_av]", _LB) for s in ("[lb_av]", "lb")}},
    "kgf": {
        **_same("kgf", "kg"),
        **{s: ("[lbf_av]", _LB) for s in ("[lbf_av]", "lbf", "[lb_av]", "lb")},
        "N": ("N", 1 / 9.80665),
    },
    "{score}": _same("{score}", "score", "points"),
    "%": _same("%", "percent"),
    "uV": {**_same("uV", "µV"), "mV": ("mV", 1000.0)},
    "/d": {**_same("/d", "steps/d"), "{steps}/d": ("{steps}/d", 1.0)},
    "{#}/(30.s)": _same("{#}/(30.s)", "{#}", "stands", "reps"),
    "d/wk": _same("d/wk"),
    "min/d": _same("min/d"),
    "min/wk": {"min/wk": ("min/wk", 1.0), "h/wk": ("h/wk", 60.0)},
    # treatment parameters
    "Hz": {"Hz": ("Hz", 1.0), "kHz": ("kHz", 1000.0)},
    "us": {**_same("us", "µs"), "ms": ("ms", 1000.0)},
    "mA": _same("mA"),
    "MHz": _same("MHz"),
    "W/cm2": _same("W/cm2", "W/cm²"),
    "nm": _same("nm"),
    "J/cm2": _same("J/cm2", "J/cm²"),
    "Cel": _same("Cel", "°C"),
    "mW": {"mW": ("mW", 1.0), "W": ("W", 1000.0)},
}


def accepted(canonical: str) -> tuple[str, ...]:
    """Return the input spellings accepted for a canonical unit."""
    return tuple(UNITS.get(canonical, {canonical: (canonical, 1.0)}))


def single_unit(canonical: str) -> bool:
    """Whether every accepted spelling is the same unit (so a value without a unit is unambiguous)."""
    return len({factor for _, factor in UNITS.get(canonical, {canonical: (canonical, 1.0)}).values()}) == 1


def resolve(unit: str | None, canonical: str) -> tuple[str, float] | None:
    """Return (UCUM code to store, factor to the canonical unit) for an entered unit, or None.

    A missing unit resolves only when the measure has a single unit.
    """
    if unit is None:
        return (canonical, 1.0) if single_unit(canonical) else None
    if unit == canonical:
        return canonical, 1.0
    return UNITS.get(canonical, {}).get(unit)


def convert(value: float, unit: str | None, canonical: str) -> float | None:
    """Return the value in the canonical unit, or None if `unit` does not convert to it."""
    found = resolve(unit, canonical)
    if found is None:
        return None
    return value if found[1] == 1.0 else round(value * found[1], 6)


def ucum(unit: str | None, canonical: str) -> str:
    """Return the UCUM code an accepted entered unit is stored as (after `resolve` succeeded)."""
    found = resolve(unit, canonical)
    assert found is not None
    return found[0]
