"""The verbs of the service: ingest, exports and proofs, streaming destinations and
their dead letters, workspaces, keys, integrity. A change and the audit_log.* event
about it commit together (service_events.audited, docs/architecture.md)."""
