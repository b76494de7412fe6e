"""Provider ``Router``: writes Arbiter's own router configuration (``routes.yaml``) into a ConfigMap.

``arbiter router --configmap NAMESPACE/NAME`` watches that ConfigMap and reloads on change. The
document format is owned by :mod:`arbiter.router.config` (docs/router.md); this module only fills it:

- ``experiment``: the experiment's name (a metric label and the salt of the sticky hash);
- ``variants``: every variant, champion first, with ``url`` = the variant's ``url`` if set, else
  ``http://<service>.<namespace>.svc:<port>`` (the Service's port named ``http``, else its first
  port), and ``weight`` = its percent;
- ``champion``: the spec's champion (the router retries a failed challenger request on it);
- ``stickiness``: ``spec.routing.stickiness`` as is;
- ``shadow``: the mirror's variant and percent, ``timeoutSeconds`` and ``compare`` (the comparison rules)
  from ``spec.routing.shadow``.

Arbiter creates the ConfigMap when missing and server-side-applies only ``data["routes.yaml"]``
and two labels with field manager ``arbiter``: other keys, labels and annotations stay with their
owners. Settings only a human sets in ``routes.yaml`` (``limits``, ``shadow.maxConcurrent``, and
``shadow.compare`` while the spec sets none) are carried over from the document in place.
"""

from __future__ import annotations

import logging
from typing import Any

from arbiter.api.weights import to_percent
from arbiter.k8s.traffic import CONFIG_MAPS, SERVICES
from arbiter.router.config import (
    RouterConfig,
    RouterConfigError,
    Shadow,
    ShadowCompare,
    Stickiness,
    parse_routes_yaml,
)
from arbiter.router.config import Variant as RouterVariant
from arbiter.routing.base import (
    BaseProvider,
    InvalidTargetError,
    Mirror,
    TargetNotFoundError,
    TrafficState,
    WeightCheck,
    required_block,
)

log = logging.getLogger(__name__)

DATA_KEY = "routes.yaml"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
EXPERIMENT_LABEL = "arbiter.dev/experiment"


class RouterProvider(BaseProvider):
    """Routes through ``arbiter router`` by writing its ``routes.yaml`` into ``spec.routing.router.configMap``."""

    name = "Router"

    @property
    def config_map(self) -> str:
        """The ConfigMap's name."""
        return required_block(self.spec.routing.router, self.name, "router.configMap").config_map

    def _reconcile(self) -> None:
        text, current = self._current()
        if current is not None and {v.name for v in current.variants} == set(self.variant_names):
            state = state_of(current)
            if sum(state.weights.values()) == 100:
                # Keep the weights in place; refresh URLs, stickiness and the experiment name.
                self._write(dict(state.weights), state.mirror, text, current)
                return
        self._write({n: 100 if n == self.champion else 0 for n in self.variant_names}, None, text, current)

    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        self._write(weights, mirror, *self._current())

    def _read(self) -> TrafficState:
        text = self._document()
        if text is None:
            raise TargetNotFoundError(
                f"ConfigMap {self.namespace}/{self.config_map} has no {DATA_KEY} (reconcile writes it)"
            )
        try:
            return state_of(parse_routes_yaml(text))
        except RouterConfigError as err:
            raise InvalidTargetError(f"ConfigMap {self.namespace}/{self.config_map}: {err}") from err

    def _verify_applied(
        self, weights: dict[str, int], mirror: Mirror | None, observed: TrafficState
    ) -> WeightCheck:
        return WeightCheck.yes(
            f"ConfigMap {self.config_map} carries the weights; the router reloads it when it changes",
            observed,
        )

    # -- the document --------------------------------------------------------------------------

    def _document(self) -> str | None:
        obj = self.client.get(CONFIG_MAPS, self.namespace, self.config_map)
        if obj is None:
            return None
        text = (obj.get("data") or {}).get(DATA_KEY)
        return text if isinstance(text, str) else None

    def _current(self) -> tuple[str | None, RouterConfig | None]:
        """The document text in place and its parsed form (None when missing or unusable: it is rewritten)."""
        text = self._document()
        if text is None:
            return None, None
        try:
            return text, parse_routes_yaml(text)
        except RouterConfigError as err:
            log.warning(
                "ConfigMap %s/%s: replacing an invalid %s: %s", self.namespace, self.config_map, DATA_KEY, err
            )
            return text, None

    def _write(
        self, weights: dict[str, int], mirror: Mirror | None, text: str | None, current: RouterConfig | None
    ) -> None:
        document = build_config(
            self.experiment,
            self.champion,
            self._urls(),
            weights,
            mirror,
            self._stickiness(),
            self._timeout(),
            current,
            compare=self._compare(),
        ).to_yaml()
        if document == text:
            return
        self.client.apply(
            CONFIG_MAPS,
            self.namespace,
            self.config_map,
            {
                "metadata": {"labels": {MANAGED_BY_LABEL: "arbiter", EXPERIMENT_LABEL: self.experiment}},
                "data": {DATA_KEY: document},
            },
        )

    def _urls(self) -> dict[str, str]:
        urls = {}
        for variant in self.variants:
            if variant.url is not None:  # served outside the cluster's DNS: no Service to read
                urls[variant.name] = variant.url
                continue
            service = self.service_of(variant)
            obj = self.client.get(SERVICES, self.namespace, service)
            if obj is None:
                raise TargetNotFoundError(
                    f"Service {self.namespace}/{service} of variant {variant.name} does not exist"
                )
            urls[variant.name] = f"http://{service}.{self.namespace}.svc:{service_port(obj)}"
        return urls

    def _stickiness(self) -> Stickiness | None:
        sticky = self.spec.routing.stickiness
        if sticky is None or (sticky.header is None and sticky.cookie is None):
            return None
        return Stickiness(header=sticky.header, cookie=sticky.cookie)

    def _compare(self) -> ShadowCompare | None:
        shadow = self.spec.routing.shadow
        rules = shadow.compare if shadow is not None else None
        if rules is None:
            return None
        return ShadowCompare(
            numeric_tolerance=rules.numeric_tolerance,
            fields=tuple(rules.fields),
            ignore=tuple(rules.ignore),
            score=rules.score,
        )

    def _timeout(self) -> float:
        shadow = self.spec.routing.shadow
        return shadow.timeout_seconds if shadow is not None else 1.0


def service_port(service: dict[str, Any]) -> int:
    """The port clients use: the one named ``http``, else the first.

    Raises:
        InvalidTargetError: the Service has no ports.
    """
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports:
        name = (service.get("metadata") or {}).get("name")
        raise InvalidTargetError(f"Service {name} has no ports")
    named = [p for p in ports if p.get("name") == "http"]
    return int((named or ports)[0]["port"])


def build_config(
    experiment: str,
    champion: str,
    urls: dict[str, str],
    weights: dict[str, int],
    mirror: Mirror | None,
    stickiness: Stickiness | None,
    shadow_timeout: float,
    current: RouterConfig | None = None,
    *,
    compare: ShadowCompare | None = None,
) -> RouterConfig:
    """Build the router document for these weights, keeping the human-only settings of ``current``.

    Args:
        experiment: the experiment's name.
        champion: the champion's variant name.
        urls: base URL per variant, in variant order (champion first).
        weights: percent per variant.
        mirror: the shadow, if any.
        stickiness: the sticky key, if any.
        shadow_timeout: the mirrored request's timeout in seconds.
        current: the document in place, whose ``limits`` and shadow tuning are kept.
        compare: the comparison rules from ``spec.routing.shadow.compare``; None keeps those of ``current``.
    """
    shadow = None
    if mirror is not None:
        previous = current.shadow if current is not None else None
        tuning: dict[str, Any] = {}
        if previous is not None:
            tuning = {"max_concurrent": previous.max_concurrent, "compare": previous.compare}
        if compare is not None:
            tuning["compare"] = compare
        shadow = Shadow(
            variant=mirror.variant, percent=mirror.percent, timeout_seconds=shadow_timeout, **tuning
        )
    return RouterConfig(
        experiment=experiment,
        variants=tuple(
            RouterVariant(name=name, url=url, weight=weights.get(name, 0)) for name, url in urls.items()
        ),
        champion=champion,
        stickiness=stickiness,
        shadow=shadow,
        **({"limits": current.limits} if current is not None else {}),
    )


def state_of(config: RouterConfig) -> TrafficState:
    """The percent per variant a router document carries; the shadow variant serves nothing."""
    shadow = config.shadow.variant if config.shadow is not None else None
    served = to_percent({v.name: (0.0 if v.name == shadow else v.weight) for v in config.variants})
    mirror = None
    if config.shadow is not None:
        mirror = Mirror(config.shadow.variant, round(config.shadow.percent))
    return TrafficState(served, mirror)
