"""Arbiter router package."""
