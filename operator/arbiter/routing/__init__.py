"""Arbiter routing package."""
