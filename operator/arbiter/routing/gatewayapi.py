"""Provider ``GatewayAPI``: sets ``backendRefs`` weights (and a ``RequestMirror`` filter) of an ``HTTPRoute``.

The HTTPRoute (``gateway.networking.k8s.io/v1``, named by ``spec.routing.gatewayAPI.httpRoute``) is
the user's: Arbiter never creates or deletes it. It manages every rule that has a ``backendRef`` to one
of the variants' Services (kind Service, same namespace); other rules are never touched.

In a managed rule:

- each variant's backendRef gets ``weight`` = its percent (0 keeps the ref, so the route stays
  valid and the weight can grow again); a variant without a ref gets one appended, with the port of
  the rule's first variant ref. Refs to other backends, and every other field of a ref, stay as
  they are (their weights then share the traffic as the Gateway API defines).
- shadow: one ``RequestMirror`` filter ``{backendRef: {name: <service>, port}, percent}``
  (``percent`` is standard since Gateway API v1.3); a mirror filter to one of the variants'
  Services that is no longer wanted is removed; other filters are left alone.

Every list in an HTTPRoute is ``atomic`` (server-side apply would take ownership of all rules), so
changes are a targeted JSON patch of ``/spec/rules/<i>/backendRefs`` and ``.../filters`` guarded by
a ``test`` of ``metadata.resourceVersion``: a concurrent change is re-read, never overwritten.
``hostnames``, ``parentRefs``, labels, annotations, matches and timeouts stay with their owners.

``verify`` answers yes only when the spec carries the weights and every parent Gateway reports
``Accepted`` and ``ResolvedRefs`` true for the current generation; no answer from any Gateway
controller (empty ``status.parents``) is "cannot tell".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from arbiter.api.weights import to_percent
from arbiter.k8s.traffic import HTTP_ROUTES
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


class GatewayAPIProvider(BaseProvider):
    """Routes through an HTTPRoute's weighted ``backendRefs``."""

    name = "GatewayAPI"

    @property
    def http_route(self) -> str:
        """The HTTPRoute's name."""
        return required_block(self.spec.routing.gateway_api, self.name, "gatewayAPI.httpRoute").http_route

    @property
    def services(self) -> dict[str, str]:
        """Service name -> variant name."""
        return {self.service_of(v): v.name for v in self.variants}

    def _reconcile(self) -> None:
        # The HTTPRoute is the user's: it must exist and reference the champion; variants whose refs
        # are missing are added at weight 0 and the weights in place are kept.
        route = self._route()
        rules = managed_rules(route, self.services, self.namespace)
        if not rules:
            raise self._no_rule_error()
        state = rule_state(
            route["spec"]["rules"][rules[0]], self.services, self.namespace, self.variant_names
        )
        weights = dict(state.weights)
        if sum(weights.values()) != 100:
            weights = {n: 100 if n == self.champion else 0 for n in self.variant_names}
        self._patch(route, weights, state.mirror)

    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        self._patch(self._route(), weights, mirror)

    def _read(self) -> TrafficState:
        route = self._route()
        rules = managed_rules(route, self.services, self.namespace)
        if not rules:
            raise self._no_rule_error()
        return rule_state(route["spec"]["rules"][rules[0]], self.services, self.namespace, self.variant_names)

    def verify(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> WeightCheck:
        """Check every managed rule's weights, then what the Gateway controllers report."""
        expected = self.check(weights, mirror)
        try:
            route = self._call(self._route)
        except TargetNotFoundError as err:
            return WeightCheck.no(str(err))
        rules = managed_rules(route, self.services, self.namespace)
        if not rules:
            return WeightCheck.no(str(self._no_rule_error()))
        observed = None
        for index in rules:
            state = rule_state(
                route["spec"]["rules"][index], self.services, self.namespace, self.variant_names
            )
            observed = observed or state
            mismatch = describe_mismatch(expected, mirror, state)
            if mismatch:
                return WeightCheck.no(f"HTTPRoute {self.http_route} rule {index}: {mismatch}", state)
        return parent_verdict(route, observed)

    # -- I/O -----------------------------------------------------------------------------------

    def _route(self) -> JsonObject:
        route = self.client.get(HTTP_ROUTES, self.namespace, self.http_route)
        if route is None:
            raise TargetNotFoundError(f"HTTPRoute {self.namespace}/{self.http_route} does not exist")
        return route

    def _patch(self, route: JsonObject, weights: dict[str, int], mirror: Mirror | None) -> None:
        operations = patch_operations(route, self.services, self.namespace, weights, mirror)
        if operations:
            version = route["metadata"]["resourceVersion"]
            self.client.json_patch(
                HTTP_ROUTES, self.namespace, self.http_route, operations, resource_version=version
            )

    def _no_rule_error(self) -> InvalidTargetError:
        return InvalidTargetError(
            f"HTTPRoute {self.namespace}/{self.http_route} has no rule with a backendRef to any of the "
            f"Services {sorted(self.services)}"
        )


# -- pure document logic (unit-tested without a cluster) ---------------------------------------


def is_service_ref(ref: Mapping[str, Any], namespace: str) -> bool:
    """Whether a backendRef points at a core Service in ``namespace`` (the defaults included)."""
    return bool(
        ref.get("group", "") == ""
        and ref.get("kind", "Service") == "Service"
        and ref.get("namespace", namespace) == namespace
    )


def variant_of_ref(ref: Mapping[str, Any], services: Mapping[str, str], namespace: str) -> str | None:
    """The variant a backendRef points at, or None for any other backend."""
    if not is_service_ref(ref, namespace):
        return None
    return services.get(str(ref.get("name")))


def managed_rules(route: Mapping[str, Any], services: Mapping[str, str], namespace: str) -> list[int]:
    """Indexes of the rules with at least one backendRef to a variant's Service."""
    rules = (route.get("spec") or {}).get("rules") or []
    return [
        index
        for index, rule in enumerate(rules)
        if any(variant_of_ref(ref, services, namespace) for ref in rule.get("backendRefs") or [])
    ]


def rule_state(
    rule: Mapping[str, Any], services: Mapping[str, str], namespace: str, variants: list[str]
) -> TrafficState:
    """Percent per variant among the rule's variant refs (a ref without weight weighs 1), and its mirror."""
    shares = dict.fromkeys(variants, 0.0)
    for ref in rule.get("backendRefs") or []:
        variant = variant_of_ref(ref, services, namespace)
        if variant is not None:
            shares[variant] += float(ref.get("weight", 1))
    mirror = None
    for item in rule.get("filters") or []:
        if item.get("type") != "RequestMirror":
            continue
        config = item.get("requestMirror") or {}
        variant = variant_of_ref(config.get("backendRef") or {}, services, namespace)
        if variant is not None:
            mirror = Mirror(variant, mirror_percent(config))
    return TrafficState(to_percent(shares), mirror)


def mirror_percent(config: Mapping[str, Any]) -> int:
    """The share a RequestMirror filter mirrors: ``percent``, else ``fraction``, else all (100)."""
    if "percent" in config:
        return int(config["percent"])
    fraction = config.get("fraction")
    if isinstance(fraction, Mapping):
        denominator = int(fraction.get("denominator", 100)) or 100
        return round(100 * int(fraction.get("numerator", 0)) / denominator)
    return 100


def desired_rule(
    rule: Mapping[str, Any],
    services: Mapping[str, str],
    namespace: str,
    weights: Mapping[str, int],
    mirror: Mirror | None,
) -> tuple[list[JsonObject], list[JsonObject]]:
    """The rule's backendRefs and filters carrying ``weights`` and ``mirror``; everything else kept."""
    service_of = {variant: service for service, variant in services.items()}
    refs = [copy.deepcopy(ref) for ref in rule.get("backendRefs") or []]
    seen: set[str] = set()
    port = None
    for ref in refs:
        variant = variant_of_ref(ref, services, namespace)
        if variant is None:
            continue
        port = port if port is not None else ref.get("port")
        # A second ref to the same variant would double its share: it keeps only the first one's weight.
        ref["weight"] = weights.get(variant, 0) if variant not in seen else 0
        seen.add(variant)
    for variant, weight in weights.items():
        if variant not in seen:
            ref = {"name": service_of[variant], "weight": weight}
            if port is not None:
                ref["port"] = port
            refs.append(ref)
    filters = [
        copy.deepcopy(item)
        for item in rule.get("filters") or []
        if not (
            item.get("type") == "RequestMirror"
            and variant_of_ref((item.get("requestMirror") or {}).get("backendRef") or {}, services, namespace)
        )
    ]
    if mirror is not None:
        backend: JsonObject = {"name": service_of[mirror.variant]}
        if port is not None:
            backend["port"] = port
        filters.append(
            {"type": "RequestMirror", "requestMirror": {"backendRef": backend, "percent": mirror.percent}}
        )
    return refs, filters


def patch_operations(
    route: Mapping[str, Any],
    services: Mapping[str, str],
    namespace: str,
    weights: Mapping[str, int],
    mirror: Mirror | None,
) -> list[JsonObject]:
    """The JSON patch that puts ``weights``/``mirror`` into every managed rule.

    Returns:
        One operation per changed list; ``[]`` when nothing changes.

    Raises:
        InvalidTargetError: no rule references a variant's Service.
    """
    rules = (route.get("spec") or {}).get("rules") or []
    indexes = managed_rules(route, services, namespace)
    if not indexes:
        name = (route.get("metadata") or {}).get("name")
        raise InvalidTargetError(
            f"HTTPRoute {name} has no rule with a backendRef to any of the Services {sorted(services)}"
        )
    operations: list[JsonObject] = []
    for index in indexes:
        rule = rules[index]
        refs, filters = desired_rule(rule, services, namespace, weights, mirror)
        if refs != rule.get("backendRefs"):
            operations.append({"op": "replace", "path": f"/spec/rules/{index}/backendRefs", "value": refs})
        if filters != (rule.get("filters") or []):
            if filters:
                operations.append({"op": "add", "path": f"/spec/rules/{index}/filters", "value": filters})
            else:
                operations.append({"op": "remove", "path": f"/spec/rules/{index}/filters"})
    return operations


def parent_verdict(route: Mapping[str, Any], observed: TrafficState | None) -> WeightCheck:
    """What the Gateway controllers say about the route's current generation."""
    generation = (route.get("metadata") or {}).get("generation")
    name = (route.get("metadata") or {}).get("name")
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return WeightCheck.cannot_tell(
            f"HTTPRoute {name} carries the weights, but no Gateway controller reports on it (status.parents is empty)",
            observed,
        )
    for parent in parents:
        gateway = (parent.get("parentRef") or {}).get("name", "?")
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in ("Accepted", "ResolvedRefs"):
            condition = conditions.get(kind)
            if condition is None:
                return WeightCheck.no(
                    f"Gateway {gateway} has not reported {kind} for HTTPRoute {name}", observed
                )
            if condition.get("observedGeneration") != generation:
                return WeightCheck.no(
                    f"Gateway {gateway} has not yet processed generation {generation} of HTTPRoute {name} "
                    f"({kind} is for generation {condition.get('observedGeneration')})",
                    observed,
                )
            if condition.get("status") != "True":
                return WeightCheck.no(
                    f"Gateway {gateway}: {kind} is {condition.get('status')} for HTTPRoute {name}: "
                    f"{condition.get('reason', '')} {condition.get('message', '')}".rstrip(),
                    observed,
                )
    return WeightCheck.yes(
        f"HTTPRoute {name} carries the weights and {len(parents)} Gateway(s) accepted generation {generation}",
        observed,
    )
