"""Providers: one small interface (start -> operation, status -> pending/completed/failed)."""
