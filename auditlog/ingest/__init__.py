"""The pieces of ingest that need no database: validation, enrichment, the canonical
payload form and the per-key rate limit. The append itself is services/ingest.py."""
