"""Exports: signed download links, proof bundles and the file formats (CSV, JSON, NDJSON).
Creating and listing exports is services/exports.py."""
