"""Clinic language <-> FHIR R4B for rehabilitation: measures, plans, sessions, outcomes, sensors.

Pure functions over plain dicts (validated with fhir.resources in tests and by the server on
write): marshmallow schemas for what a clinic sends, the measure catalog, builders to FHIR,
readers back, instrument scoring and progress analytics. No Flask, no SQL.
https://hl7.org/fhir/R4B/observation.html
"""
