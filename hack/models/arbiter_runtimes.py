"""A custom MLServer runtime for the demo's *slow* variant: scikit-learn, with latency added.

MLServer imports it by the ``implementation`` of a model-settings.json that sits next to it
(``arbiter_runtimes.DelayedSKLearnModel``). The delay comes from ``parameters.extra.delay_ms`` and can
be overridden per process with the ``ARBITER_MODEL_DELAY_MS`` environment variable. It runs inside
the model server's own virtualenv, not Arbiter's.
"""

from __future__ import annotations

import asyncio
import os

from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_sklearn import SKLearnModel


class DelayedSKLearnModel(SKLearnModel):
    """The scikit-learn runtime, answering ``delay_ms`` later: a slow model without a slow machine."""

    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        override = os.environ.get("ARBITER_MODEL_DELAY_MS")
        self._delay = float(override if override else extra.get("delay_ms", 0)) / 1000.0
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Sleeping (not spinning) keeps the event loop free, as a model waiting on a GPU or a
        # feature store would; the latency is the model's, not the machine's.
        await asyncio.sleep(self._delay)
        return await super().predict(payload)
