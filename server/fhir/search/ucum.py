"""Canonical UCUM units, so quantities in convertible units compare (5 mg = 0.005 g).

https://ucum.org/ucum (search: https://hl7.org/fhir/R4B/search.html#quantity)

A small UCUM subset: metric prefixes, ``.`` and ``/`` products, integer exponents,
``10*n`` factors and ``{annotations}``, over the atoms listed in ``_ATOMS``. The canonical
form is a value in base units (g, m, s, rad, K, C, cd, mol) and a code naming the
dimension, e.g. ``("g.m-3", 5000.0)`` for 5 mg/L. Temperatures are handled: ``Cel`` and
``[degF]`` convert to kelvin with their offsets, but only as a whole code (``Cel/h`` has no
canonical form). Arbitrary units (``[IU]``, ``U``) are not convertible.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import cache

_BASES = ("g", "m", "s", "rad", "K", "C", "cd", "mol")
Dims = tuple[int, ...]


def _d(**exps: int) -> Dims:
    return tuple(exps.get(b, 0) for b in _BASES)


_NONE = _d()
_GM = 9.80665  # standard gravity, m/s2
_ATOMS: dict[str, tuple[float, Dims]] = {
    "g": (1.0, _d(g=1)),
    "m": (1.0, _d(m=1)),
    "s": (1.0, _d(s=1)),
    "rad": (1.0, _d(rad=1)),
    "K": (1.0, _d(K=1)),
    "C": (1.0, _d(C=1)),
    "cd": (1.0, _d(cd=1)),
    "mol": (1.0, _d(mol=1)),
    "eq": (1.0, _d(mol=1)),
    "1": (1.0, _NONE),
    "%": (0.01, _NONE),
    "[ppm]": (1e-6, _NONE),
    "[ppb]": (1e-9, _NONE),
    "t": (1e6, _d(g=1)),
    "u": (1.6605402e-24, _d(g=1)),
    "[lb_av]": (453.59237, _d(g=1)),
    "[oz_av]": (28.349523125, _d(g=1)),
    "[gr]": (0.06479891, _d(g=1)),
    "[in_i]": (0.0254, _d(m=1)),
    "[ft_i]": (0.3048, _d(m=1)),
    "[yd_i]": (0.9144, _d(m=1)),
    "[mi_i]": (1609.344, _d(m=1)),
    "Ao": (1e-10, _d(m=1)),
    "min": (60.0, _d(s=1)),
    "h": (3600.0, _d(s=1)),
    "d": (86400.0, _d(s=1)),
    "wk": (604800.0, _d(s=1)),
    "mo": (2629800.0, _d(s=1)),
    "a": (31557600.0, _d(s=1)),
    "deg": (math.pi / 180, _d(rad=1)),
    "'": (math.pi / 10800, _d(rad=1)),
    "''": (math.pi / 648000, _d(rad=1)),
    "sr": (1.0, _d(rad=2)),
    "L": (1e-3, _d(m=3)),
    "l": (1e-3, _d(m=3)),
    "[foz_us]": (2.95735295625e-5, _d(m=3)),
    "[gal_us]": (3.785411784e-3, _d(m=3)),
    "[pt_us]": (4.73176473e-4, _d(m=3)),
    "N": (1e3, _d(g=1, m=1, s=-2)),
    "gf": (_GM, _d(g=1, m=1, s=-2)),
    "[lbf_av]": (453.59237 * _GM, _d(g=1, m=1, s=-2)),
    "dyn": (1e-2, _d(g=1, m=1, s=-2)),
    "Hz": (1.0, _d(s=-1)),
    "Bq": (1.0, _d(s=-1)),
    "Pa": (1e3, _d(g=1, m=-1, s=-2)),
    "bar": (1e8, _d(g=1, m=-1, s=-2)),
    "atm": (101325e3, _d(g=1, m=-1, s=-2)),
    "m[Hg]": (133322387.415, _d(g=1, m=-1, s=-2)),
    "m[H2O]": (9806650.0, _d(g=1, m=-1, s=-2)),
    "[psi]": (6894757.29, _d(g=1, m=-1, s=-2)),
    "J": (1e3, _d(g=1, m=2, s=-2)),
    "cal": (4184.0, _d(g=1, m=2, s=-2)),
    "[Cal]": (4184e3, _d(g=1, m=2, s=-2)),
    "eV": (1.60217733e-16, _d(g=1, m=2, s=-2)),
    "W": (1e3, _d(g=1, m=2, s=-3)),
    "A": (1.0, _d(C=1, s=-1)),
    "V": (1e3, _d(g=1, m=2, s=-2, C=-1)),
    "Ohm": (1e3, _d(g=1, m=2, s=-1, C=-2)),
    "S": (1e-3, _d(g=-1, m=-2, s=1, C=2)),
    "F": (1e-3, _d(g=-1, m=-2, s=2, C=2)),
    "T": (1e3, _d(g=1, s=-1, C=-1)),
    "Gy": (1.0, _d(m=2, s=-2)),
    "Sv": (1.0, _d(m=2, s=-2)),
    "kat": (1.0, _d(mol=1, s=-1)),
    "lm": (1.0, _d(cd=1, rad=2)),
    "lx": (1.0, _d(cd=1, rad=2, m=-2)),
}
# Atoms that take no metric prefix (so "mo" is month, not milli-ounce, and "min" is minutes).
_UNPREFIXED = frozenset(
    {"1", "%", "min", "h", "d", "wk", "mo", "a", "deg", "'", "''", "atm", "[ppm]", "[ppb]"}
)
_PREFIXES = {
    "Y": 1e24,
    "Z": 1e21,
    "E": 1e18,
    "P": 1e15,
    "T": 1e12,
    "G": 1e9,
    "M": 1e6,
    "k": 1e3,
    "h": 1e2,
    "da": 1e1,
    "d": 1e-1,
    "c": 1e-2,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "f": 1e-15,
    "a": 1e-18,
}
_TEMPERATURES = {"Cel": (1.0, 273.15), "[degF]": (5 / 9, 273.15 - 32 * 5 / 9)}
_TERM = re.compile(r"^(?P<atom>.*?)(?P<exp>[+-]?\d+)?$")
_POWER = re.compile(r"^10[*^]([+-]?\d+)$")


def _atom(symbol: str) -> tuple[float, Dims] | None:
    if symbol in _ATOMS:
        return _ATOMS[symbol]
    for prefix in ("da", *_PREFIXES):
        if symbol.startswith(prefix) and len(symbol) > len(prefix):
            rest = symbol[len(prefix) :]
            if rest in _ATOMS and rest not in _UNPREFIXED:
                factor, dims = _ATOMS[rest]
                return _PREFIXES[prefix] * factor, dims
    return None


def _term(text: str) -> tuple[float, Dims] | None:
    text = re.sub(r"\{[^}]*\}", "", text)
    if text == "":
        return 1.0, _NONE  # a bare annotation such as {beats} is dimensionless
    power = _POWER.match(text)
    if power:
        return 10.0 ** int(power.group(1)), _NONE
    if text in _ATOMS or text.isdigit():
        found = _atom(text) if text in _ATOMS else (float(text), _NONE)
        return found
    m = _TERM.match(text)
    if not m:
        return None
    found = _atom(m.group("atom"))
    if found is None:
        return None
    exp = int(m.group("exp") or 1)
    return found[0] ** exp, tuple(d * exp for d in found[1])


@cache
def parse_unit(code: str) -> tuple[float, Dims] | None:
    """Return (factor to base units, dimension vector) of a UCUM code, or None if unknown."""
    if not code or " " in code:
        return None
    factor, dims = 1.0, _NONE
    tokens = re.split(r"([./])", code)
    sign = 1
    for token in tokens:
        if token == ".":
            sign = 1
            continue
        if token == "/":
            sign = -1
            continue
        if token == "" and sign == -1:
            return None
        if token == "":
            continue  # a leading "/" as in "/min"
        try:
            term = _term(token)
            if term is None:
                return None
            factor *= term[0] ** sign
        except (OverflowError, ValueError):  # 10*999, km300, an exponent of thousands of digits
            return None
        dims = tuple(a + sign * b for a, b in zip(dims, term[1], strict=True))
    # A factor beyond a double (10*200.10*200 is inf, 10*-999 is 0) converts nothing.
    return (factor, dims) if math.isfinite(factor) and factor else None


def dimension_code(dims: Dims) -> str:
    """Spell a dimension vector as a UCUM-style code of base units (``g.m-3``; ``1`` if none)."""
    parts = [b if e == 1 else f"{b}{e}" for b, e in zip(_BASES, dims, strict=True) if e]
    return ".".join(parts) or "1"


def canonical(value: Decimal | float, code: str) -> tuple[float, str] | None:
    """Return the value in UCUM base units and the canonical code, or None if not convertible."""
    if code in _TEMPERATURES:
        scale, offset = _TEMPERATURES[code]
        return float(f"{float(value) * scale + offset:.12g}"), "K"
    parsed = parse_unit(code)
    if parsed is None:
        return None
    factor, dims = parsed
    # 12 significant digits drop float noise (1 10*3/uL is 1e12, not 999999999999.9999).
    return float(f"{float(value) * factor:.12g}"), dimension_code(dims)
