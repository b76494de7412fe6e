"""One metrics provider (one HTTP session) per Prometheus configuration, reused across ticks."""

from __future__ import annotations

import pytest

from arbiter.api.v1alpha1 import Analysis
from arbiter.metrics import registry, shared_provider_for


def analysis(url: str, timeout: str = "10s") -> Analysis:
    return Analysis.model_validate({"prometheus": {"url": url, "timeout": timeout}})


def test_the_same_configuration_gets_the_same_provider() -> None:
    first = shared_provider_for(analysis("http://prom-a:9090"))
    assert shared_provider_for(analysis("http://prom-a:9090")) is first


def test_a_different_url_or_timeout_gets_its_own_provider() -> None:
    base = shared_provider_for(analysis("http://prom-b:9090"))
    assert shared_provider_for(analysis("http://prom-c:9090")) is not base
    assert shared_provider_for(analysis("http://prom-b:9090", timeout="3s")) is not base


def test_the_cache_is_bounded_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "SHARED_PROVIDERS", 2)
    kept = shared_provider_for(analysis("http://lru-1:9090"))
    shared_provider_for(analysis("http://lru-2:9090"))
    assert shared_provider_for(analysis("http://lru-1:9090")) is kept  # now the most recent
    shared_provider_for(analysis("http://lru-3:9090"))  # evicts lru-2, the least recently used
    assert shared_provider_for(analysis("http://lru-1:9090")) is kept
    assert "http://lru-2:9090" not in " ".join(registry._shared)
