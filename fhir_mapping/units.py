"""Accepted input units and their conversion to the UCUM unit a measure is stored in.

https://ucum.org/ucum (unit codes); https://hl7.org/fhir/R4B/datatypes.html#Quantity
"""

from __future__ import annotations

# canonical UCUM code -> {accepted input spelling: factor to the canonical unit}
CONVERSIONS: dict[str, dict[str, float]] = {
    "deg": {"deg": 1.0, "°": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 57.29577951308232},
    "s": {"s": 1.0, "sec": 1.0, "seconds": 1.0, "ms": 0.001, "min": 60.0},
    "min": {"min": 1.0, "minutes": 1.0, "h": 60.0, "s": 1 / 60},
    "m/s": {"m/s": 1.0, "cm/s": 0.01, "km/h": 1 / 3.6, "[ft_i]/s": 0.3048, "ft/s": 0.3048},
    "m": {"m": 1.0, "cm": 0.01, "km": 1000.0, "[ft_i]": 0.3048, "ft": 0.3048, "[yd_i]": 0.9144, "yd": 0.9144},
    "mm": {"mm": 1.0, "cm": 10.0},
    "kg": {
        "kg": 1.0,
        "[lb_av]": 0.45359237,
        "lb": 0.45359237,
        "[lbf_av]": 0.45359237,
        "lbf": 0.45359237,
        "kgf": 1.0,
        "N": 1 / 9.80665,
    },
    "{score}": {"{score}": 1.0, "score": 1.0, "points": 1.0},
    "%": {"%": 1.0, "percent": 1.0},
    "uV": {"uV": 1.0, "µV": 1.0, "mV": 1000.0},
    "/d": {"/d": 1.0, "steps/d": 1.0, "{steps}/d": 1.0},
    "{#}/(30.s)": {"{#}/(30.s)": 1.0, "{#}": 1.0, "stands": 1.0, "reps": 1.0},
    "d/wk": {"d/wk": 1.0},
    "min/d": {"min/d": 1.0},
    "min/wk": {"min/wk": 1.0, "h/wk": 60.0},
    # treatment parameters
    "Hz": {"Hz": 1.0, "kHz": 1000.0},
    "us": {"us": 1.0, "µs": 1.0, "ms": 1000.0},
    "mA": {"mA": 1.0},
    "MHz": {"MHz": 1.0},
    "W/cm2": {"W/cm2": 1.0, "W/cm²": 1.0},
    "nm": {"nm": 1.0},
    "J/cm2": {"J/cm2": 1.0, "J/cm²": 1.0},
    "Cel": {"Cel": 1.0, "°C": 1.0},
    "mW": {"mW": 1.0, "W": 1000.0},
}


def accepted(canonical: str) -> tuple[str, ...]:
    """Return the input units accepted for a canonical unit."""
    return tuple(CONVERSIONS.get(canonical, {canonical: 1.0}))


def convert(value: float, unit: str | None, canonical: str) -> float | None:
    """Return the value in the canonical unit, or None if `unit` does not convert to it."""
    if unit is None or unit == canonical:
        return value
    factor = CONVERSIONS.get(canonical, {}).get(unit)
    if factor is None:
        return None
    return round(value * factor, 6)
