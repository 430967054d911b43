"""GraphQL types, inputs, permissions and context. No SQL here."""
