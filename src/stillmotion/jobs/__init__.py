"""Durable jobs: the SQLite store and the runner that drives them to an end."""
