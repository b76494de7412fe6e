"""Arbiter metrics package."""
