"""Arbiter: a Kubernetes operator that rolls out ML models and decides with real statistics."""

__version__ = "0.1.0"
