"""Ingest: landing deliveries → bronze → silver (+ quarantine) → gold."""
