"""TLS on the server (``--certfile``/``--keyfile``) with certificates from a throwaway
trustme CA: the handshake, a whole chat over ``wss://`` (our library client, the
independent ``websockets`` client in plain and JSON mode), and how failed handshakes are
logged (one line, never a traceback: the live server fixture fails on any error log).
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
from pathlib import Path

import pytest
import trio
import websockets.exceptions
from inproc import LiveServer, StartLiveServer, connect_to, open_json, open_plain

import trio_chat
from trio_chat.client.api import ChatError
from trio_chat.server.config import ServerConfig
from trio_chat.server.net.tls import PLAIN_HTTP_ON_TLS, TLSSetupError
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, Certificates, make_certificates, stamped

pytest_plugins = ["inproc"]


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


@pytest.fixture
async def tls_server(start_live_server: StartLiveServer, certificates: Certificates) -> LiveServer:
    live = await start_live_server(certfile=certificates.certfile, keyfile=certificates.keyfile)
    live.client_ssl = certificates.client_context()
    return live


async def test_a_tls_server_listens_on_wss(tls_server: LiveServer) -> None:
    """With a certificate and key the server's URLs (and its start-up line) say wss://."""
    url = f"wss://127.0.0.1:{tls_server.server.port}"
    assert tls_server.server.urls == [url]
    await tls_server.wait_for(f"Server is running on {url}")


async def test_a_whole_chat_over_wss(tls_server: LiveServer, certificates: Certificates) -> None:
    """Our library client (verifying with the test CA's file) and the websockets client
    (plain and JSON, with an ssl context) chat over TLS; the connections are seen as TLS."""
    async with (
        trio_chat.connect(tls_server.url, nick="alice", cafile=certificates.cafile) as alice,
        open_plain(tls_server) as plain,
        open_json(tls_server, "/?nick=bob", nick="bob") as bob,
    ):
        await plain.expect("* bob joined lobby")
        said = await alice.say("hello over TLS")
        await plain.expect("alice says: hello over TLS")
        assert stamped(await bob.event()) == {
            "type": "message",
            "id": said["id"],
            "room": "lobby",
            "from": "alice",
            "text": "hello over TLS",
        }
        await plain.send("and back")
        with trio.fail_after(EVENT_TIMEOUT):
            async for received in alice:
                if received["type"] == "message" and received.get("from") != "alice":
                    break
        assert (received.get("from"), received["text"]) == (None, "and back")
        assert all(connection.tls for connection in _sockets(tls_server))


def _sockets(live: LiveServer) -> list:
    return [connection.socket for connection in live.server.connections.values()]


async def test_our_client_refuses_a_certificate_from_another_ca(
    tls_server: LiveServer, tmp_path: Path
) -> None:
    """A certificate that does not chain to the CA given (or, without one, to the system's
    CAs) is refused in one line; the server logs each refused handshake in one line."""
    other = make_certificates(tmp_path, "other")
    refusal = (
        f"Could not connect to {tls_server.url}: the server's certificate is not valid: "
        "unable to get local issuer certificate"
    )
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(tls_server.url, cafile=other.cafile):
            pass
    assert str(refused.value) == refusal
    # trio's TLS drops the connection without sending its alert: the server sees an end.
    await tls_server.wait_for(
        re.compile(r"^127\.0\.0\.1:\d+: TLS handshake failed: the client closed the connection$")
    )
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(tls_server.url):  # the system's CAs
            pass
    assert str(refused.value) == refusal


async def test_a_client_that_rejects_the_certificate_is_one_log_line(
    tls_server: LiveServer, tmp_path: Path
) -> None:
    """A client whose TLS library sends its alert (OpenSSL on a blocking socket, as most
    do): the server's line says the client does not trust the certificate."""
    other = make_certificates(tmp_path, "other")

    def handshake() -> None:
        with (
            socket.create_connection(("127.0.0.1", tls_server.server.port)) as sock,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            other.client_context().wrap_socket(sock, server_hostname="127.0.0.1")

    await trio.to_thread.run_sync(handshake)
    await tls_server.wait_for(
        re.compile(
            r"^127\.0\.0\.1:\d+: TLS handshake failed: "
            r"the client does not trust the certificate \(unknown CA\)$"
        )
    )


async def test_our_client_refuses_a_certificate_for_another_host(
    start_live_server: StartLiveServer, tmp_path: Path
) -> None:
    """A certificate from a trusted CA, but for another name, is refused too."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("chat.example.org")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    live = await start_live_server(
        certfile=str(tmp_path / "c.pem"), keyfile=str(tmp_path / "k.pem")
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(live.url, ssl_context=context):
            pass
    assert str(refused.value) == (
        f"Could not connect to {live.url}: the server's certificate is not valid: "
        "IP address mismatch, certificate is not valid for '127.0.0.1'."
    )


async def test_plain_http_on_the_tls_port_is_told_to_use_wss(tls_server: LiveServer) -> None:
    """A ws:// client on the TLS port gets HTTP 400 in clear text saying to use wss://; the
    server logs one line."""
    plain_url = tls_server.url.replace("wss://", "ws://")
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(plain_url):
            pass
    assert str(refused.value) == (
        f"Could not connect to {plain_url}: the server refused with HTTP 400 ({PLAIN_HTTP_ON_TLS})"
    )
    await tls_server.wait_for(
        re.compile(
            r"^127\.0\.0\.1:\d+: TLS handshake failed: a plain HTTP request on the TLS port$"
        )
    )
    with pytest.raises(websockets.exceptions.InvalidStatus) as invalid:
        async with connect_to(plain_url):
            pass
    assert invalid.value.response.status_code == 400
    assert invalid.value.response.body == f"{PLAIN_HTTP_ON_TLS}\n".encode()


async def test_our_client_says_when_a_wss_server_speaks_no_tls(
    live_server: LiveServer, certificates: Certificates
) -> None:
    """wss:// to a plain server: one line saying so, not a handshake error."""
    url = live_server.url.replace("ws://", "wss://")
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(url, cafile=certificates.cafile):
            pass
    assert str(refused.value) == (
        f"Could not connect to {url}: the server does not speak TLS (try ws://)"
    )


async def test_the_tls_handshake_is_under_the_handshake_timeout(
    start_live_server: StartLiveServer, certificates: Certificates
) -> None:
    """A peer that opens TCP and never starts TLS is dropped after --handshake-timeout,
    with the usual line."""
    live = await start_live_server(
        certfile=certificates.certfile, keyfile=certificates.keyfile, handshake_timeout=0.2
    )
    stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
    async with stream:
        port = stream.socket.getsockname()[1]
        await live.wait_for(f"127.0.0.1:{port}: no WebSocket handshake within 0.2 s")
        with trio.fail_after(EVENT_TIMEOUT):
            assert await stream.receive_some() == b""


def test_a_certificate_that_cannot_be_used_stops_the_server_at_start(
    certificates: Certificates, tmp_path: Path
) -> None:
    """A missing file, a key that is not the certificate's, or only one of the two: one
    line (TLSSetupError) before anything listens."""
    other = make_certificates(tmp_path, "other")
    missing = str(tmp_path / "missing.pem")
    cases = {
        (certificates.certfile, missing): (
            f"cannot use the TLS key file {missing}: No such file or directory"
        ),
        (certificates.certfile, other.keyfile): (
            f"cannot use the TLS key file {other.keyfile}: it is not the key of the "
            f"certificate in {certificates.certfile}"
        ),
        (certificates.keyfile, certificates.keyfile): (
            f"cannot use the TLS certificate file {certificates.keyfile}: not a PEM certificate"
        ),
        (certificates.certfile, None): "certfile and keyfile go together: give both, or neither",
    }
    for (certfile, keyfile), line in cases.items():
        with pytest.raises(TLSSetupError) as failed:
            ChatServer(ServerConfig(db=":memory:", certfile=certfile, keyfile=keyfile))
        assert str(failed.value) == line


async def test_a_renewed_certificate_is_served_once_reloaded(
    tls_server: LiveServer, certificates: Certificates, tmp_path: Path
) -> None:
    """New files in place of the old (a renewal) are read on reload_certificate (SIGHUP):
    new connections get the new certificate; an open connection is left alone."""
    renewed = make_certificates(tmp_path, "renewed")
    shutil.copy(renewed.certfile, certificates.certfile)
    shutil.copy(renewed.keyfile, certificates.keyfile)
    async with trio_chat.connect(tls_server.url, cafile=certificates.cafile) as before:
        assert await tls_server.server.reload_certificate()
        await tls_server.wait_for(f"reloaded the TLS certificate {certificates.certfile}")
        async with trio_chat.connect(tls_server.url, cafile=renewed.cafile) as after:
            await after.say("renewed")
        await before.say("still here")
    with pytest.raises(ChatError):
        async with trio_chat.connect(tls_server.url, cafile=certificates.cafile):
            pass


async def test_a_reload_that_fails_keeps_the_certificate_it_had(
    tls_server: LiveServer, certificates: Certificates
) -> None:
    """A broken file at reload: one warning line, and the old certificate is still served."""
    await trio.Path(certificates.keyfile).write_text("not a key\n")
    assert not await tls_server.server.reload_certificate()
    await tls_server.wait_for(
        f"cannot use the TLS key file {certificates.keyfile}: not a PEM private key; "
        "still serving the certificate loaded before"
    )
    async with trio_chat.connect(tls_server.url, cafile=certificates.cafile) as chat:
        await chat.say("as before")


async def test_the_library_takes_a_ca_for_wss_urls_only(
    live_server: LiveServer, certificates: Certificates
) -> None:
    """cafile with a ws:// URL, or cafile and ssl_context both: one line, no connection."""
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(live_server.url, cafile=certificates.cafile):
            pass
    assert str(refused.value) == f"{live_server.url}: cafile and ssl_context are for a wss:// URL"
    wss = live_server.url.replace("ws://", "wss://")
    with pytest.raises(ChatError) as refused:
        async with trio_chat.connect(
            wss, cafile=certificates.cafile, ssl_context=certificates.client_context()
        ):
            pass
    assert str(refused.value) == "give cafile or ssl_context, not both"
