"""Who is asking and what they may touch, handed to every interaction.

Built by the auth layer from a validated token; the FHIR layer only reads it.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccessContext:
    """The caller: user, client, granted scopes and the patient a patient-scoped token is bound to."""

    user: str | None = None
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    patient: str | None = None
    remote_addr: str | None = None
    unrestricted: bool = True

    def can(self, resource_type: str, interaction: str) -> bool:
        """Return whether the caller may perform `interaction` (c, r, u, d, s) on the type."""
        return self.unrestricted


OPEN = AccessContext()
