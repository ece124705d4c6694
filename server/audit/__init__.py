"""Audit trail: one IHE BALP AuditEvent per FHIR interaction, in an HMAC-keyed chain.

See server/audit/README.md. https://profiles.ihe.net/ITI/BALP/
"""
