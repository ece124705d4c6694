"""What a user's role lets them be granted: one table, applied at consent, code exchange and refresh.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

A token's scopes are the intersection of what the app asked for, what the app is registered
for and what the signed-in user's role allows. The token response's `scope` says exactly what
was granted; what the role cut is shown on the consent page with the reason.

- practitioner: clinical data (patient/ and user/ scopes on any type) but never AuditEvent.
  SMART scopes cannot say "every type but AuditEvent", so a wildcard (`user/*.rs`) is not
  granted to a practitioner: the app must name the clinical types it needs.
- auditor: read and search AuditEvent, and Patient (to name whom an event is about); nothing
  else, no writes. A wider request is narrowed to that (`user/*.cruds` -> `user/AuditEvent.rs
  user/Patient.rs`).
- patient: patient/ scopes only, bound to their own Patient record (their fhirUser).
- admin: everything a user may hold (patient/ and user/ scopes).
System scopes are for backend services (client_credentials), never for a signed-in user.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass

from auth import scopes as scope_rules
from server.fhir.access import ScopeRule

_ORDER = "cruds"


@dataclass(frozen=True, slots=True)
class RoleCap:
    """The most a role may be granted: contexts, and per type the interactions (None: every type)."""

    label: str
    contexts: frozenset[str]
    types: Mapping[str, str] | None = None
    never: frozenset[str] = frozenset()


CAPS: Mapping[str, RoleCap] = {
    "practitioner": RoleCap(
        "a practitioner", frozenset({"patient", "user"}), never=frozenset({"AuditEvent"})
    ),
    "auditor": RoleCap("an auditor", frozenset({"user"}), types={"AuditEvent": "rs", "Patient": "rs"}),
    "patient": RoleCap("a patient", frozenset({"patient"})),
    "admin": RoleCap("an administrator", frozenset({"patient", "user"})),
}
ROLES = tuple(CAPS)


@dataclass(frozen=True, slots=True)
class Capped:
    """The outcome of applying a role's cap: the scopes granted and each cut one with its reason."""

    granted: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]

    @property
    def has_clinical(self) -> bool:
        """Whether any clinical (data access) scope survived."""
        return any(scope_rules.parse_rule(s) is not None for s in self.granted)


_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def _text(rule: ScopeRule, type_: str, interactions: Iterable[str]) -> str:
    letters = "".join(ch for ch in _ORDER if ch in set(interactions))
    query = "?" + urllib.parse.urlencode(rule.params, safe=":/|,") if rule.params else ""
    return f"{rule.context}/{type_}.{letters}{query}"


def _allowance(types: Mapping[str, str]) -> str:
    """'read and search AuditEvent and Patient' for {"AuditEvent": "rs", "Patient": "rs"}."""
    groups: dict[str, list[str]] = {}
    for type_, letters in types.items():
        groups.setdefault(letters, []).append(type_)
    return "; ".join(
        f"{' and '.join(_NAMES[ch] for ch in letters)} {' and '.join(names)}"
        for letters, names in groups.items()
    )


def _apply(cap: RoleCap, scope: str, rule: ScopeRule) -> tuple[list[str], str | None]:
    """The scopes `scope` becomes under the cap, and why it was cut or narrowed (None: kept as is)."""
    if rule.context not in cap.contexts:
        allowed = " or ".join(f"{c}/" for c in sorted(cap.contexts))
        return [], f"{cap.label} is granted {allowed} scopes only"
    if cap.types is None:
        if rule.type in cap.never:
            return [], f"{cap.label} is never granted {rule.type}"
        if rule.type == "*" and cap.never:
            never = ", ".join(sorted(cap.never))
            return (
                [],
                f"it would include {never}, which {cap.label} is never granted: the app must name the types",
            )
        return [scope], None
    if rule.type != "*" and rule.type not in cap.types:
        return [], f"{cap.label} is granted {' and '.join(cap.types)} only"
    if rule.type != "*" and rule.interactions <= set(cap.types[rule.type]):
        return [scope], None
    targets = list(cap.types) if rule.type == "*" else [rule.type]
    out = [
        _text(rule, t, rule.interactions & set(cap.types[t]))
        for t in targets
        if rule.interactions & set(cap.types[t])
    ]
    allowed = _allowance(cap.types)
    if not out:
        return [], f"{cap.label} may only {allowed}"
    return out, f"narrowed to {' '.join(out)}: {cap.label} may only {allowed}"


def cap(role: str, scopes: Iterable[str]) -> Capped:
    """Cap the scopes to what `role` may be granted (an unknown role gets no clinical scope)."""
    limits = CAPS.get(role)
    granted: list[str] = []
    dropped: list[tuple[str, str]] = []
    for scope in scopes:
        rule = scope_rules.parse_rule(scope)
        if rule is None:
            granted.append(scope)  # openid, fhirUser, launch..., offline_access: no data by themselves
            continue
        if limits is None:
            dropped.append((scope, f"the role {role!r} is not known"))
            continue
        kept, why = _apply(limits, scope, rule)
        granted.extend(kept)
        if why is not None:
            dropped.append((scope, why))
    return Capped(tuple(dict.fromkeys(granted)), tuple(dropped))
