"""Ingest: validate, enrich, append. Independent of HTTP and GraphQL."""
