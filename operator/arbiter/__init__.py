"""Arbiter: a Kubernetes operator that rolls out ML models and decides with real statistics."""

__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version (``__version__`` when run from a source tree)."""
    try:
        from importlib.metadata import version as installed

        return installed("arbiter")
    except Exception:  # not installed as a distribution
        return __version__
