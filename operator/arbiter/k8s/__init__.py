"""Arbiter k8s package."""
