"""Periodic work (partitions ahead, retention purge), each job with run_once() for tests."""
