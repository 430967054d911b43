"""The verbs of the service; each takes a connection and leaves the transaction to its caller
unless it says otherwise."""
