"""Kopf handlers; importing this package registers them."""

from arbiter.handlers import experiment, notifications

__all__ = ["experiment", "notifications"]
