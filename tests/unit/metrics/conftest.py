"""Fixtures of the metrics unit tests: a fake Prometheus HTTP server and a refusing port."""

from fakeprom import fake_prometheus, refused_url

__all__ = ["fake_prometheus", "refused_url"]
