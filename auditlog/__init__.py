"""Audit log service for AIBAMS workspaces."""

__version__ = "0.1.0"
