"""Bulk data: $export jobs (worker, files, manifest) and the `rehabfhir load` command."""
