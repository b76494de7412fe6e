"""Provider ``Istio``: sets the route weights (and ``mirror``) of one HTTP route of a ``VirtualService``.

The VirtualService (``networking.istio.io/v1``, ``spec.routing.istio.virtualService``) is the user's:
Arbiter never creates or deletes it. It manages one entry of ``spec.http``: the one named
``spec.routing.istio.route``, else the first entry that is not one of Arbiter's pin routes (below).

In the managed route:

- ``route[]``: each variant's destination (``destination.host`` is the variant's Service, short
  ``svc``, ``svc.<ns>``, ``svc.<ns>.svc`` or the full ``svc.<ns>.svc.cluster.local``) gets ``weight``
  = its percent, 0 included; a variant without a destination gets one appended, its host written
  like the champion's and with the champion's port. Other destinations and other fields stay.
- shadow: ``mirror: {host: <service>}`` plus ``mirrorPercentage: {value: <percent>}``; both are
  removed when no mirror is wanted and the mirror points at one of the variants.

Sticky A/B (when ``spec.routing.stickiness`` is set): Envoy cannot hash a user key across weighted
destinations, so stickiness in Istio is a *pin*: each serving destination of the managed route adds
a response header naming its variant (``Set-Cookie: <cookie>=<variant>; Path=/`` for a cookie, or
``<header>: <variant>`` for a header the client echoes back), and Arbiter keeps one pin route per
serving variant just before the managed route, named ``arbiter-<experiment>-<variant>``, that matches
the managed route's matches plus "the cookie/header names this variant" and routes 100% to it.
A user is assigned at random on the first request and then stays. A variant whose weight drops to 0
loses its pin route (its users are reassigned). ``finalize`` removes every pin route.

Every list in a VirtualService is ``atomic`` (no list-type in Istio's CRD), so changes are a JSON
patch replacing ``/spec/http`` from a fresh read, guarded by a ``test`` of the resourceVersion.
``hosts``, ``gateways``, other routes' content, labels and annotations stay with their owners.

``verify``: the spec carries the weights, and Istio's status (``status.observedGeneration``,
written when istiod runs with ``PILOT_ENABLE_STATUS``) has caught up; without status it is
"cannot tell"; a ``Reconciled`` condition that is False is "no".
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from arbiter.api.v1alpha1 import Stickiness
from arbiter.api.weights import to_percent
from arbiter.k8s.traffic import VIRTUAL_SERVICES
from arbiter.routing.base import (
    BaseProvider,
    InvalidTargetError,
    Mirror,
    TargetNotFoundError,
    TrafficState,
    WeightCheck,
    describe_mismatch,
    required_block,
)

JsonObject = dict[str, Any]


class IstioProvider(BaseProvider):
    """Routes through one weighted HTTP route of a VirtualService."""

    name = "Istio"

    @property
    def virtual_service(self) -> str:
        """The VirtualService's name."""
        return required_block(self.spec.routing.istio, self.name, "istio.virtualService").virtual_service

    @property
    def route_name(self) -> str | None:
        """The managed route's name, None for the first route."""
        block = self.spec.routing.istio
        return block.route if block is not None else None

    @property
    def services(self) -> dict[str, str]:
        """Service name -> variant name."""
        return {self.service_of(v): v.name for v in self.variants}

    def _document(self) -> VirtualServiceDocument:
        return VirtualServiceDocument(
            namespace=self.namespace,
            experiment=self.experiment,
            services=self.services,
            variants=self.variant_names,
            route_name=self.route_name,
            stickiness=self.spec.routing.stickiness,
        )

    def _reconcile(self) -> None:
        vs = self._vs()
        document = self._document()
        state = document.state(vs)
        weights = dict(state.weights)
        if sum(weights.values()) != 100:
            weights = {n: 100 if n == self.champion else 0 for n in self.variant_names}
        self._patch(vs, document, weights, state.mirror, finalizing=False)

    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        self._patch(self._vs(), self._document(), weights, mirror, finalizing=finalizing)

    def _read(self) -> TrafficState:
        return self._document().state(self._vs())

    def verify(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> WeightCheck:
        """Check the managed route (and pins), then Istio's status for the current generation."""
        expected = self.check(weights, mirror)
        try:
            vs = self._call(self._vs)
            document = self._document()
            observed = document.state(vs)
        except (TargetNotFoundError, InvalidTargetError) as err:
            return WeightCheck.no(str(err))
        mismatch = describe_mismatch(expected, mirror, observed)
        if not mismatch and document.http(vs, expected, mirror, finalizing=False) != vs["spec"].get("http"):
            mismatch = "the sticky pin routes or response headers are not in place"
        if mismatch:
            return WeightCheck.no(f"VirtualService {self.virtual_service}: {mismatch}", observed)
        return status_verdict(vs, observed)

    def _vs(self) -> JsonObject:
        vs = self.client.get(VIRTUAL_SERVICES, self.namespace, self.virtual_service)
        if vs is None:
            raise TargetNotFoundError(
                f"VirtualService {self.namespace}/{self.virtual_service} does not exist"
            )
        return vs

    def _patch(
        self,
        vs: JsonObject,
        document: VirtualServiceDocument,
        weights: dict[str, int],
        mirror: Mirror | None,
        *,
        finalizing: bool,
    ) -> None:
        http = document.http(vs, weights, mirror, finalizing=finalizing)
        if http == vs["spec"].get("http"):
            return
        self.client.json_patch(
            VIRTUAL_SERVICES,
            self.namespace,
            self.virtual_service,
            [{"op": "replace", "path": "/spec/http", "value": http}],
            resource_version=vs["metadata"]["resourceVersion"],
        )


class VirtualServiceDocument:
    """Pure logic over a VirtualService's JSON: find the managed route, read and write weights and pins.

    Args:
        namespace: the experiment's (and the VirtualService's) namespace.
        experiment: names the pin routes.
        services: Service name -> variant name.
        variants: variant names, champion first.
        route_name: the managed route's name, None for the first non-pin route.
        stickiness: the sticky key, None for no pins.
    """

    def __init__(
        self,
        namespace: str,
        experiment: str,
        services: Mapping[str, str],
        variants: list[str],
        route_name: str | None,
        stickiness: Stickiness | None,
    ) -> None:
        self.namespace = namespace
        self.experiment = experiment
        self.services = dict(services)
        self.service_of = {variant: service for service, variant in services.items()}
        self.variants = variants
        self.route_name = route_name
        self.stickiness = stickiness if stickiness and (stickiness.header or stickiness.cookie) else None

    # -- locating ------------------------------------------------------------------------------

    def pin_name(self, variant: str) -> str:
        """The name of the pin route of ``variant``."""
        return f"arbiter-{self.experiment}-{variant}"

    def is_pin(self, route: Mapping[str, Any]) -> bool:
        """Whether an HTTP route is one of this experiment's pin routes."""
        return route.get("name") in {self.pin_name(v) for v in self.variants}

    def managed_index(self, vs: Mapping[str, Any]) -> int:
        """Index of the managed route in ``spec.http``.

        Raises:
            InvalidTargetError: no such route.
        """
        http = (vs.get("spec") or {}).get("http") or []
        name = (vs.get("metadata") or {}).get("name")
        for index, route in enumerate(http):
            if self.is_pin(route):
                continue
            if self.route_name is None or route.get("name") == self.route_name:
                return index
        wanted = f"an HTTP route named {self.route_name!r}" if self.route_name else "an HTTP route"
        raise InvalidTargetError(f"VirtualService {name} has no {wanted} to manage")

    def variant_of_host(self, host: str) -> str | None:
        """The variant a destination host points at (short or qualified Service name), else None."""
        service, _, rest = host.partition(".")
        if service not in self.services:
            return None
        if rest in ("", self.namespace, f"{self.namespace}.svc") or rest.startswith(f"{self.namespace}.svc."):
            return self.services[service]
        return None

    # -- reading -------------------------------------------------------------------------------

    def state(self, vs: Mapping[str, Any]) -> TrafficState:
        """Percent per variant of the managed route (one destination without weight is 100), and its mirror."""
        route = vs["spec"]["http"][self.managed_index(vs)]
        destinations = route.get("route") or []
        shares = dict.fromkeys(self.variants, 0.0)
        for destination in destinations:
            variant = self.variant_of_host(_host(destination))
            if variant is not None:
                default = 100 if len(destinations) == 1 else 0
                shares[variant] += float(destination.get("weight", default))
        mirror = None
        target = self.variant_of_host((route.get("mirror") or {}).get("host", ""))
        if target is not None:
            percentage = route.get("mirrorPercentage")
            value = percentage.get("value", 0) if isinstance(percentage, Mapping) else 100
            mirror = Mirror(target, round(float(value)))
        return TrafficState(to_percent(shares), mirror)

    # -- writing -------------------------------------------------------------------------------

    def http(
        self, vs: Mapping[str, Any], weights: Mapping[str, int], mirror: Mirror | None, *, finalizing: bool
    ) -> list[JsonObject]:
        """The whole new ``spec.http``: the managed route with these weights, pins before it."""
        http = [copy.deepcopy(r) for r in (vs.get("spec") or {}).get("http") or []]
        index = self.managed_index(vs)
        managed = self._weighted(http[index], weights, mirror, sticky=not finalizing)
        pins = [] if finalizing else self._pins(managed, weights)
        others = [r for i, r in enumerate(http) if i != index and not self.is_pin(r)]
        position = sum(1 for i, r in enumerate(http[:index]) if not self.is_pin(r))
        return [*others[:position], *pins, managed, *others[position:]]

    def _weighted(
        self, route: JsonObject, weights: Mapping[str, int], mirror: Mirror | None, *, sticky: bool
    ) -> JsonObject:
        destinations = route.get("route") or []
        ours = [d for d in destinations if self.variant_of_host(_host(d)) is not None]
        # New destinations are written like the champion's (or else the first variant's).
        champions = [d for d in ours if self.variant_of_host(_host(d)) == self.variants[0]]
        template = (champions or ours or [None])[0]
        seen: set[str] = set()
        for destination in ours:
            variant = self.variant_of_host(_host(destination))
            assert variant is not None
            destination["weight"] = weights.get(variant, 0) if variant not in seen else 0
            seen.add(variant)
            self._set_pin_header(destination, variant if sticky and weights.get(variant, 0) > 0 else None)
        for variant in self.variants:
            if variant in seen:
                continue
            destination = {
                "destination": self._destination_like(template, variant),
                "weight": weights.get(variant, 0),
            }
            self._set_pin_header(destination, variant if sticky and weights.get(variant, 0) > 0 else None)
            destinations.append(destination)
        route["route"] = destinations
        if mirror is not None:
            route["mirror"] = self._destination_like(template, mirror.variant)
            route["mirrorPercentage"] = {"value": mirror.percent}
        elif self.variant_of_host((route.get("mirror") or {}).get("host", "")) is not None:
            route.pop("mirror", None)
            route.pop("mirrorPercentage", None)
        return route

    def _destination_like(self, template: Mapping[str, Any] | None, variant: str) -> JsonObject:
        """A destination for ``variant`` written like ``template`` (host style and port)."""
        service = self.service_of[variant]
        if template is None:
            return {"host": service}
        source = template.get("destination") or {}
        _, dot, rest = str(source.get("host", "")).partition(".")
        destination: JsonObject = {"host": f"{service}{dot}{rest}"}
        if "port" in source:
            destination["port"] = copy.deepcopy(source["port"])
        return destination

    def _set_pin_header(self, destination: JsonObject, variant: str | None) -> None:
        """Add (or, with None, remove) the response header that tells the client its variant."""
        key, _ = self._pin_response_header("")
        if self.stickiness is None or not key:
            return
        headers = destination.setdefault("headers", {})
        response = headers.setdefault("response", {})
        add = response.setdefault("add", {})
        if variant is None:
            add.pop(key, None)
        else:
            add[key] = self._pin_response_header(variant)[1]
        # Leave no empty shells behind, so a finalized route reads like the user's original.
        if not add:
            response.pop("add")
        if not response:
            headers.pop("response")
        if not headers:
            destination.pop("headers")

    def _pin_response_header(self, variant: str) -> tuple[str, str]:
        if self.stickiness is None:
            return "", ""
        if self.stickiness.cookie:
            return "set-cookie", f"{self.stickiness.cookie}={variant}; Path=/"
        return (self.stickiness.header or "").lower(), variant

    def _pin_match(self, variant: str) -> JsonObject:
        assert self.stickiness is not None
        if self.stickiness.cookie:
            cookie = re.escape(self.stickiness.cookie)
            return {"cookie": {"regex": f"(^|.*; ?){cookie}={re.escape(variant)}(;.*)?$"}}
        return {(self.stickiness.header or "").lower(): {"exact": variant}}

    def _pins(self, managed: Mapping[str, Any], weights: Mapping[str, int]) -> list[JsonObject]:
        if self.stickiness is None:
            return []
        pins = []
        for variant in self.variants:
            if weights.get(variant, 0) <= 0:
                continue
            destination = next(
                d for d in managed.get("route") or [] if self.variant_of_host(_host(d)) == variant
            )
            pin = {k: copy.deepcopy(v) for k, v in managed.items() if k not in ("name", "match", "route")}
            matches = managed.get("match") or [{}]
            pin_matches = []
            for match in matches:
                combined = copy.deepcopy(match)
                combined.pop("name", None)
                combined["headers"] = {**combined.get("headers", {}), **self._pin_match(variant)}
                pin_matches.append(combined)
            pins.append(
                {
                    "name": self.pin_name(variant),
                    "match": pin_matches,
                    "route": [{**copy.deepcopy(destination), "weight": 100}],
                    **pin,
                }
            )
        return pins


def status_verdict(vs: Mapping[str, Any], observed: TrafficState) -> WeightCheck:
    """What istiod's status says about the current generation."""
    metadata = vs.get("metadata") or {}
    name, generation = metadata.get("name"), metadata.get("generation")
    status = vs.get("status") or {}
    if "observedGeneration" not in status:
        return WeightCheck.cannot_tell(
            f"VirtualService {name} carries the weights, but Istio reports no status "
            "(istiod writes it with PILOT_ENABLE_STATUS=true)",
            observed,
        )
    if int(status["observedGeneration"]) != generation:
        return WeightCheck.no(
            f"Istio has not yet processed generation {generation} of VirtualService {name} "
            f"(status is for {status['observedGeneration']})",
            observed,
        )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Reconciled" and condition.get("status") == "False":
            return WeightCheck.no(
                f"Istio did not reconcile VirtualService {name}: {condition.get('message', '')}", observed
            )
    errors = [
        m for m in status.get("validationMessages") or [] if str(m.get("level", "")).upper() in ("ERROR", "3")
    ]
    if errors:
        return WeightCheck.no(f"Istio reports errors for VirtualService {name}: {errors}", observed)
    return WeightCheck.yes(
        f"VirtualService {name} carries the weights; Istio processed generation {generation}", observed
    )


def _host(destination: Mapping[str, Any]) -> str:
    """The host of a route destination (``route[].destination.host``)."""
    return str((destination.get("destination") or {}).get("host", ""))
