"""Audit trail: one IHE BALP AuditEvent per FHIR interaction, in a SHA-256 hash chain.

See server/audit/README.md. https://profiles.ihe.net/ITI/BALP/
"""
