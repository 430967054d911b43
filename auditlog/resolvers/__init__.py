"""Thin resolvers: authorize, call storage/ingest/streaming, convert, map errors."""
