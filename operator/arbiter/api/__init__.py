"""Arbiter api package."""
