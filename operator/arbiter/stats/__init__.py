"""Arbiter stats package."""
