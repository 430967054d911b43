"""Plain HTTP endpoints (not GraphQL): ingest, health, downloads."""
