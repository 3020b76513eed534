"""TLS through the command lines: ``trio-chat-server --certfile --keyfile`` serving
``wss://`` (its ready file says so), the terminal client with ``--cafile``, and the
start-up failures of a certificate that cannot be used (one line, exit status 2)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from websockets.sync.client import connect

from support import (
    EVENT_TIMEOUT,
    ROOT,
    Certificates,
    ServerProcess,
    child_env,
    make_certificates,
    recv_text,
)


def run(*command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a command line of ours to completion."""
    return subprocess.run(
        [sys.executable, *command],
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )


def test_a_tls_server_and_the_terminal_client_chat_over_wss(tmp_path: Path) -> None:
    """The ready file gives a wss:// URL; the client, trusting the test CA with --cafile,
    sends a line that a websockets client (with an ssl context) receives."""
    certificates: Certificates = make_certificates(tmp_path)
    server = ServerProcess("--certfile", certificates.certfile, "--keyfile", certificates.keyfile)
    try:
        assert server.ready["urls"] == [f"wss://127.0.0.1:{server.port}"]
        with connect(
            server.url, ssl=certificates.client_context(), open_timeout=EVENT_TIMEOUT, proxy=None
        ) as peer:
            result = run(
                "-m",
                "trio_chat.client",
                server.url,
                "--cafile",
                certificates.cafile,
                "--plain",
                stdin="over TLS\nexit\n",
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.splitlines()[:2] == [
                f"Connecting to server at {server.url}...",
                "\N{WHITE HEAVY CHECK MARK} Connected to server!",
            ]
            assert recv_text(peer) == "Someone says: over TLS"
    finally:
        server.stop()


def test_the_terminal_client_refuses_another_cas_certificate(tmp_path: Path) -> None:
    """Without the server's CA (the system's CAs only): one line, exit status 1."""
    certificates = make_certificates(tmp_path)
    server = ServerProcess("--certfile", certificates.certfile, "--keyfile", certificates.keyfile)
    try:
        result = run("-m", "trio_chat.client", server.url, stdin="exit\n")
    finally:
        server.stop()
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"Connecting to server at {server.url}...",
        f"Could not connect to {server.url}: the server's certificate is not valid: "
        "unable to get local issuer certificate",
    ]
    assert result.stderr == ""


def test_a_missing_or_lone_certificate_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A missing key file, or a certificate without its key: one line, status 2."""
    certificates = make_certificates(tmp_path)
    missing = str(tmp_path / "missing.key")
    base = ["-m", "trio_chat.server", "--port", "0", "--db", ":memory:", "--no-console"]
    cases = {
        ("--certfile", certificates.certfile, "--keyfile", missing): (
            f"cannot use the TLS key file {missing}: No such file or directory"
        ),
        ("--certfile", certificates.certfile): (
            "certfile and keyfile go together: give both, or neither"
        ),
    }
    for flags, line in cases.items():
        result = run(*base, *flags)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [line]


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    """SIGHUP makes a TLS server read its certificate again and keep serving."""
    certificates = make_certificates(tmp_path)
    server = ServerProcess("--certfile", certificates.certfile, "--keyfile", certificates.keyfile)
    try:
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(f"reloaded the TLS certificate {certificates.certfile}\n")
        with connect(
            server.url, ssl=certificates.client_context(), open_timeout=EVENT_TIMEOUT, proxy=None
        ) as ws:
            ws.send("after the reload")
            assert recv_text(ws) == "You said: after the reload"
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_the_clients_cafile_needs_wss_and_a_usable_file(tmp_path: Path) -> None:
    """--cafile with a ws:// URL is a usage error (status 2); a CA file that cannot be
    read is one line and status 1, before any connection."""
    result = run("-m", "trio_chat.client", "ws://127.0.0.1:1", "--cafile", "ca.pem")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "trio-chat: error: --cafile is for a wss:// URL; see --help\n"
    missing = tmp_path / "missing.pem"
    result = run("-m", "trio_chat.client", "wss://127.0.0.1:1", "--cafile", str(missing))
    assert result.returncode == 1
    assert result.stdout == f"Cannot use the CA file {missing}: No such file or directory\n"
