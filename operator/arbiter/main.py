"""Entry point for `kopf run -m arbiter.main`: importing it registers every handler."""

import arbiter.handlers  # noqa: F401
