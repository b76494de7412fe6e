"""The operator's TLS connections read into small buffers (Kopf opens one connection per concurrent call)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import Iterator

import pytest

from arbiter.handlers.experiment import shrink_tls_read_buffers


@pytest.fixture
def restored_max_size() -> Iterator[None]:
    original = asyncio.sslproto.SSLProtocol.max_size
    yield
    asyncio.sslproto.SSLProtocol.max_size = original


def _new_protocol(loop: asyncio.AbstractEventLoop) -> asyncio.sslproto.SSLProtocol:
    return asyncio.sslproto.SSLProtocol(
        loop, asyncio.Protocol(), ssl.create_default_context(), loop.create_future(), server_side=False
    )


async def test_a_new_tls_connection_gets_the_smaller_read_buffer(restored_max_size: None) -> None:
    loop = asyncio.get_running_loop()
    default = len(_new_protocol(loop)._ssl_buffer)
    shrink_tls_read_buffers(16 * 1024)
    protocol = _new_protocol(loop)
    assert len(protocol._ssl_buffer) == 16 * 1024 < default
    # The selector loop asks for "any size" (-1) and gets at most the new size.
    assert len(protocol.get_buffer(-1)) == 16 * 1024
