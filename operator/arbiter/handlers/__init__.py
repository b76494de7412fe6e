"""Arbiter handlers package."""
