"""Kopf handlers; importing this package registers them."""

from arbiter.handlers import experiment

__all__ = ["experiment"]
