"""The terminal client over ``wss://``: it chats over TLS, verifies the certificate
(against the CA it is given, else the system's), and refuses an invalid one in one line,
at once: a refused certificate is not a server that is down, so it is never retried.

:class:`ChatClient` runs in the test's Trio loop against in-process servers with trustme
certificates; its screen is a string buffer, its input a pipe the test owns.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
import trio
from inproc import StartLiveServer, open_plain

from trio_chat.client.connection import Backoff, ChatClient, client_ssl_context
from trio_chat.client.terminal import Screen

from support import EVENT_TIMEOUT, Certificates, make_certificates

pytest_plugins = ["inproc"]


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


def make_client(url: str, input_fd: int, cafile: str) -> tuple[ChatClient, io.StringIO]:
    output = io.StringIO()
    client = ChatClient(
        url,
        Screen(output, interactive=False),
        input_fd,
        nick="alice",
        environ={},
        backoff=Backoff(0.01, 0.02),
        ssl_context=client_ssl_context(cafile),
    )
    return client, output


async def test_the_terminal_client_chats_over_wss(
    start_live_server: StartLiveServer, certificates: Certificates
) -> None:
    """Typed lines reach a plain websockets client over TLS; the client exits 0."""
    live = await start_live_server(certfile=certificates.certfile, keyfile=certificates.keyfile)
    live.client_ssl = certificates.client_context()
    read_end, write_end = os.pipe()
    client, output = make_client(live.url, read_end, certificates.cafile)
    async with open_plain(live) as peer, trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await peer.expect("* alice joined lobby")
        os.write(write_end, b"hello over TLS\n")
        await peer.expect("alice says: hello over TLS")
        os.close(write_end)
    os.close(read_end)
    assert output.getvalue().splitlines()[:2] == [
        f"Connecting to server at {live.url}...",
        "\N{WHITE HEAVY CHECK MARK} Connected to server!",
    ]


async def test_a_certificate_refused_on_reconnecting_ends_the_session_at_once(
    start_live_server: StartLiveServer, certificates: Certificates, tmp_path: Path
) -> None:
    """The server comes back on the same port with a certificate from another CA: the
    client says why in one line and exits 1, without trying again."""
    first = await start_live_server(certfile=certificates.certfile, keyfile=certificates.keyfile)
    port = first.server.port
    read_end, write_end = os.pipe()
    client, output = make_client(first.url, read_end, certificates.cafile)
    status: list[int] = []

    async def run() -> None:
        status.append(await client.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await first.wait_for(re.compile(r"Client #1 connected from"))
        other = make_certificates(tmp_path, "other")
        first.server.shutdown()
        with trio.fail_after(EVENT_TIMEOUT):
            await first.server.stopped.wait()
        await start_live_server(port=port, certfile=other.certfile, keyfile=other.keyfile)
    os.close(write_end)
    os.close(read_end)
    assert status == [1]
    lines = output.getvalue().splitlines()
    refusal = (
        f"Could not connect to wss://127.0.0.1:{port}: the server's certificate is not "
        "valid: unable to get local issuer certificate"
    )
    assert lines[-1] == refusal
    assert lines.count(refusal) == 1
    assert sum(line.startswith("reconnecting in ") for line in lines) >= 1
    assert not lines[-2].startswith("Could not connect")
