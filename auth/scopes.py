"""SMART scopes (v2 and v1) parsed into the rules an AccessContext enforces.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

v2: `(patient|user|system)/(Type|*).<subset of cruds, in order>[?param=value&...]`.
v1: `.read` = `.rs`, `.write` = `.cud`, `.*` = `.cruds`. Interactions out of order or
unknown (`.dus`, `.rx`) grant nothing: they are dropped, never widened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from server.fhir.access import ScopeRule
from server.fhir.search.definitions import is_resource_type

_CLINICAL = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_ORDER = "cruds"
CONTEXT_SCOPES = frozenset(
    {
        "launch",
        "launch/patient",
        "launch/encounter",
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "online_access",
    }
)


def _interactions(text: str) -> str | None:
    if text in _V1:
        return _V1[text]
    last = -1
    for ch in text:
        pos = _ORDER.find(ch)
        if pos <= last:
            return None
        last = pos
    return text or None


def parse_rule(scope: str) -> ScopeRule | None:
    """Parse one clinical scope, or return None when it is not a valid clinical scope."""
    m = _CLINICAL.match(scope)
    if m is None:
        return None
    context, type_, perms, query = m.groups()
    if type_ != "*" and not is_resource_type(type_):
        return None
    letters = _interactions(perms)
    if letters is None:
        return None
    params = tuple(parse_qsl(query, keep_blank_values=False)) if query else ()
    if query is not None and not params:
        return None
    return ScopeRule(context, type_, frozenset(letters), params)


def is_valid(scope: str) -> bool:
    """Return whether the scope is one this server understands."""
    return scope in CONTEXT_SCOPES or parse_rule(scope) is not None or scope.startswith("launch/")


@dataclass(frozen=True, slots=True)
class Policy:
    """The parsed scopes of a token."""

    scopes: tuple[str, ...]
    rules: tuple[ScopeRule, ...]

    @property
    def has_patient_scopes(self) -> bool:
        """Whether any clinical scope is patient-level (the token then needs a patient)."""
        return any(r.context == "patient" for r in self.rules)

    @property
    def contexts(self) -> frozenset[str]:
        """The contexts (patient, user, system) the clinical scopes use."""
        return frozenset(r.context for r in self.rules)


def parse(scope: str | None) -> Policy:
    """Parse a space-separated scope string (unknown scopes are kept out of the rules)."""
    names = tuple(dict.fromkeys((scope or "").split()))
    rules = tuple(r for r in (parse_rule(s) for s in names) if r is not None)
    return Policy(names, rules)


def _rule_within(rule: ScopeRule, allowed: ScopeRule) -> bool:
    return (
        rule.context == allowed.context
        and (allowed.type == "*" or allowed.type == rule.type)
        and rule.interactions <= allowed.interactions
        and (not allowed.params or set(allowed.params) <= set(rule.params))
    )


def grant(requested: str | None, allowed: str) -> tuple[str, ...]:
    """Return the requested scopes the client may have (each clinical scope within an allowed one)."""
    allowed_policy = parse(allowed)
    out: list[str] = []
    for name in parse(requested).scopes:
        rule = parse_rule(name)
        if rule is None:
            if name in allowed_policy.scopes or (
                name in CONTEXT_SCOPES and _context_allowed(name, allowed_policy)
            ):
                out.append(name)
            continue
        if any(_rule_within(rule, a) for a in allowed_policy.rules):
            out.append(name)
    return tuple(out)


def _context_allowed(name: str, allowed: Policy) -> bool:
    # openid/fhirUser/launch scopes come with any app that may use user or patient scopes.
    return bool(allowed.contexts & {"patient", "user"}) or name in allowed.scopes


def narrower(requested: str | None, previous: tuple[str, ...]) -> tuple[str, ...]:
    """Return the requested scopes that a previous grant covers (a refresh never widens)."""
    return grant(requested, " ".join(previous)) if requested else previous


def describe(scope: str) -> str:
    """Describe a scope in plain words for the consent page."""
    words = {
        "launch/patient": "Choose a patient record to work with",
        "openid": "Know who you are",
        "fhirUser": "Know your user record (practitioner or patient)",
        "offline_access": "Keep access while you are not using the app",
        "online_access": "Keep access while you are using the app",
        "launch": "Open within the clinic system",
        "profile": "Know who you are",
    }
    if scope in words:
        return words[scope]
    rule = parse_rule(scope)
    if rule is None:
        return scope
    verbs = [
        v
        for k, v in (("c", "create"), ("r", "read"), ("u", "update"), ("d", "delete"), ("s", "search"))
        if k in rule.interactions
    ]
    what = "all data" if rule.type == "*" else f"{rule.type} records"
    whose = {"patient": "of the selected patient", "user": "you can access", "system": "in the whole system"}
    text = f"{', '.join(verbs).capitalize()} {what} {whose[rule.context]}"
    if rule.params:
        text += " (only where " + ", ".join(f"{k} is {v}" for k, v in rule.params) + ")"
    return text
