"""Arbiter rollout package."""
