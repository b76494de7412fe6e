"""The routing provider interface: what every traffic carrier (router, Gateway API, Istio, replicas) offers.

A provider is built for one experiment (its spec, namespace and name) and is cheap to build, so the
caller makes one per reconcile. Every method is synchronous and idempotent: calling it again with the
same arguments changes nothing. Weights are integer percent per variant name summing to exactly 100
(see :mod:`arbiter.api.weights`).

Errors are :class:`RoutingError` subclasses whose ``retryable`` says whether trying again later may
help (``kopf.TemporaryError``) or a human has to act (``kopf.PermanentError``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

from arbiter.api.v1alpha1 import ModelExperimentSpec, Variant
from arbiter.api.weights import check_weights, winner_weights
from arbiter.k8s.traffic import ConflictError, InvalidError, KubeError, NotFoundError, TrafficClient

__all__ = [
    "BaseProvider",
    "InvalidTargetError",
    "Mirror",
    "RoutingError",
    "RoutingProvider",
    "TargetNotFoundError",
    "TrafficState",
    "TransientRoutingError",
    "UnknownProviderError",
    "UnsupportedError",
    "Verification",
    "WeightCheck",
]

T = TypeVar("T")

# How many times a read-modify-write is retried when the object changed between read and write.
CONFLICT_ATTEMPTS = 5


class RoutingError(Exception):
    """Traffic could not be routed as asked. ``retryable`` says whether trying again may help."""

    retryable: ClassVar[bool] = False


class UnknownProviderError(RoutingError, ValueError):
    """``spec.routing.provider`` names no registered provider. Never falls back to another one."""


class TargetNotFoundError(RoutingError):
    """The object the provider manages (HTTPRoute, VirtualService, Deployment, Service) or its CRD is missing.

    Retryable: the user (or GitOps) may create it shortly.
    """

    retryable: ClassVar[bool] = True


class InvalidTargetError(RoutingError):
    """The managed object cannot carry the experiment, e.g. no route references the variants' Services."""


class UnsupportedError(RoutingError):
    """The provider cannot do what was asked, e.g. mirroring with the Replicas provider."""


class TransientRoutingError(RoutingError):
    """The API server refused or failed in a way that may pass (conflicts, throttling, 5xx)."""

    retryable: ClassVar[bool] = True


@dataclass(frozen=True)
class Mirror:
    """Mirror (shadow) a share of the served traffic to one variant, whose responses are discarded.

    Args:
        variant: the shadow variant; it must have weight 0 (it serves nobody).
        percent: share of requests mirrored, 0 to 100.
    """

    variant: str
    percent: int = 100

    def __post_init__(self) -> None:
        if (
            isinstance(self.percent, bool)
            or not isinstance(self.percent, int)
            or not 0 <= self.percent <= 100
        ):
            raise ValueError(f"mirror percent must be an integer within 0..100, got {self.percent!r}")


@dataclass(frozen=True)
class TrafficState:
    """What the data plane's configuration says: percent per variant, and the mirror if any.

    ``weights`` sums to 100, or is all zeros when nothing carries traffic (e.g. no ready replica).
    """

    weights: Mapping[str, int]
    mirror: Mirror | None = None


class Verification(StrEnum):
    """The three answers to "does the data plane carry these weights?"."""

    YES = "Yes"
    NO = "No"
    CANNOT_TELL = "CannotTell"


@dataclass(frozen=True)
class WeightCheck:
    """The answer of :meth:`RoutingProvider.verify`, with the reason and what was observed.

    ``NO`` means "not (yet) in place": the configuration differs, a controller rejected it, or it
    has not been acted on yet; polling again may turn it into ``YES``. ``CANNOT_TELL`` means
    nothing observable says either way (e.g. no Gateway controller reports status).
    """

    outcome: Verification
    reason: str
    observed: TrafficState | None = field(default=None)

    @classmethod
    def yes(cls, reason: str, observed: TrafficState | None = None) -> WeightCheck:
        """The weights are in place."""
        return cls(Verification.YES, reason, observed)

    @classmethod
    def no(cls, reason: str, observed: TrafficState | None = None) -> WeightCheck:
        """The weights are not (yet) in place."""
        return cls(Verification.NO, reason, observed)

    @classmethod
    def cannot_tell(cls, reason: str, observed: TrafficState | None = None) -> WeightCheck:
        """Nothing observable says whether the weights are in place."""
        return cls(Verification.CANNOT_TELL, reason, observed)


@runtime_checkable
class RoutingProvider(Protocol):
    """What the rollout engine calls to move traffic. One instance serves one experiment."""

    name: ClassVar[str]

    def reconcile(self) -> None:
        """Make sure the routes exist and reference every variant; never changes weights in place.

        A route that does not exist yet is created with the champion at 100% where the provider
        owns it (the Router's ConfigMap); objects owned by the user must already exist.
        """

    def set_weights(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> None:
        """Route ``weights`` (percent per variant, summing to 100; missing variants get 0), mirroring as given.

        ``mirror=None`` removes any mirror this provider set.
        """

    def get_weights(self) -> TrafficState:
        """Read back the weights (and mirror) really configured in the data plane's objects."""

    def verify(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> WeightCheck:
        """Does the data plane carry ``weights`` (and ``mirror``)? Yes, no, or cannot tell."""

    def finalize(self, winner: str) -> None:
        """Send 100% to ``winner`` (the champion on rollback/deletion) and remove mirrors and pins."""


def required_block(block: T | None, provider: str, field_path: str) -> T:
    """The provider's configuration block of the spec, or InvalidTargetError naming the missing field.

    Args:
        block: e.g. ``spec.routing.istio``.
        provider: the provider's name, for the message.
        field_path: the field under ``spec.routing`` that must be set, e.g. ``istio.virtualService``.
    """
    if block is None:
        raise InvalidTargetError(f"provider {provider} needs spec.routing.{field_path}")
    return block


class BaseProvider(abc.ABC):
    """Shared validation, error translation and conflict retries; subclasses implement ``_apply`` and friends.

    Args:
        spec: the experiment's spec.
        namespace: the experiment's namespace; every managed object lives there.
        experiment: the experiment's name (labels, router salt, pin route names).
        client: the Kubernetes access; a default :class:`TrafficClient` when None.
    """

    name: ClassVar[str]

    def __init__(
        self,
        spec: ModelExperimentSpec,
        namespace: str,
        experiment: str,
        client: TrafficClient | None = None,
    ) -> None:
        self.spec = spec
        self.namespace = namespace
        self.experiment = experiment
        self._client = client
        self.variants: list[Variant] = spec.variants
        self.variant_names: list[str] = [v.name for v in self.variants]
        self.champion: str = spec.champion.name

    @property
    def client(self) -> TrafficClient:
        """The Kubernetes access, created on first use (so building a provider does no I/O)."""
        if self._client is None:
            self._client = TrafficClient()
        return self._client

    # -- the interface -------------------------------------------------------------------------

    def reconcile(self) -> None:
        """See :meth:`RoutingProvider.reconcile`."""
        self._retry_conflicts(self._reconcile)

    def set_weights(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> None:
        """See :meth:`RoutingProvider.set_weights`.

        Raises:
            ValueError: the weights or the mirror do not fit the experiment's variants.
        """
        complete = self.check(weights, mirror)
        self._retry_conflicts(lambda: self._apply(complete, mirror, finalizing=False))

    def get_weights(self) -> TrafficState:
        """See :meth:`RoutingProvider.get_weights`."""
        return self._call(self._read)

    def verify(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> WeightCheck:
        """See :meth:`RoutingProvider.verify`.

        The default compares what :meth:`get_weights` reads with what was asked; providers add
        what their data plane reports (controller status, ready replicas).
        """
        expected = self.check(weights, mirror)
        try:
            observed = self.get_weights()
        except TargetNotFoundError as err:
            return WeightCheck.no(str(err))
        mismatch = describe_mismatch(expected, mirror, observed)
        if mismatch:
            return WeightCheck.no(mismatch, observed)
        return self._verify_applied(expected, mirror, observed)

    def finalize(self, winner: str) -> None:
        """See :meth:`RoutingProvider.finalize`."""
        weights = winner_weights(winner, self.variant_names)
        self._retry_conflicts(lambda: self._apply(weights, None, finalizing=True))

    # -- what providers implement --------------------------------------------------------------

    @abc.abstractmethod
    def _reconcile(self) -> None:
        """Ensure the routes exist (see :meth:`reconcile`)."""

    @abc.abstractmethod
    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        """Write complete, validated weights (every variant, in variant order)."""

    @abc.abstractmethod
    def _read(self) -> TrafficState:
        """Read back what is configured."""

    def _verify_applied(
        self, weights: dict[str, int], mirror: Mirror | None, observed: TrafficState
    ) -> WeightCheck:
        """The configuration matches; say whether the data plane acts on it. Default: yes."""
        return WeightCheck.yes("the configuration carries the weights", observed)

    # -- helpers -------------------------------------------------------------------------------

    def check(self, weights: Mapping[str, int], mirror: Mirror | None) -> dict[str, int]:
        """Validate weights and mirror against the variants; return weights for every variant.

        Raises:
            ValueError: unknown names, bad percents, or a mirror to a variant that serves traffic.
        """
        complete = check_weights(weights, self.variant_names)
        if mirror is not None:
            if mirror.variant not in self.variant_names:
                raise ValueError(f"mirror variant {mirror.variant!r} is not one of {self.variant_names}")
            if complete[mirror.variant] != 0:
                raise ValueError(
                    f"mirror variant {mirror.variant!r} has weight {complete[mirror.variant]}; "
                    "a shadow serves nobody, so its weight must be 0"
                )
        return complete

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def service_of(self, variant: Variant) -> str:
        """The variant's Service name (required by every provider but Replicas)."""
        if variant.service is None:
            raise InvalidTargetError(
                f"variant {variant.name!r} has no service; provider {self.name} needs one"
            )
        return variant.service

    def _call(self, action: Callable[[], T]) -> T:
        """Run ``action``, translating Kubernetes errors into routing errors."""
        try:
            return action()
        except NotFoundError as err:
            if err.kind_missing:
                raise TargetNotFoundError(
                    f"the resource type is not installed (missing CRD?): {err}"
                ) from err
            raise TargetNotFoundError(str(err)) from err
        except InvalidError as err:
            raise InvalidTargetError(f"the API server rejected the change: {err}") from err
        except KubeError as err:
            if err.retryable:
                raise TransientRoutingError(str(err)) from err
            raise RoutingError(str(err)) from err

    def _retry_conflicts(self, action: Callable[[], None]) -> None:
        """Run a read-modify-write ``action``, again from a fresh read when the object changed meanwhile."""

        def attempt() -> None:
            for remaining in reversed(range(CONFLICT_ATTEMPTS)):
                try:
                    action()
                    return
                except ConflictError:
                    if remaining == 0:
                        raise

        self._call(attempt)


def describe_mismatch(expected: Mapping[str, int], mirror: Mirror | None, observed: TrafficState) -> str:
    """Say how ``observed`` differs from the expected weights and mirror; empty when it does not."""
    differences = [
        f"{name}: {observed.weights.get(name, 0)}% instead of {weight}%"
        for name, weight in expected.items()
        if observed.weights.get(name, 0) != weight
    ]
    differences += [
        f"{name}: {weight}% but it is not a variant"
        for name, weight in observed.weights.items()
        if name not in expected and weight
    ]
    if observed.mirror != mirror:
        differences.append(f"mirror is {_mirror_text(observed.mirror)} instead of {_mirror_text(mirror)}")
    return "; ".join(differences)


def _mirror_text(mirror: Mirror | None) -> str:
    return "none" if mirror is None else f"{mirror.percent}% to {mirror.variant}"
