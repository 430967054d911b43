"""Exports: signed download links and the file formats (CSV, JSON, NDJSON)."""
