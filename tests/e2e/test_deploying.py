"""The README's "Deploying" snippets, as they are written there: the nginx configuration in
front of a real server (nginx terminates TLS and proxies the WebSocket to trio_chat, which,
with ``--trusted-proxy``, sees the real client's address), and the systemd units, checked
by ``systemd-analyze verify``. ``scripts/test`` installs both tools (Debian's nginx-light and
systemd) when they are missing and it runs as root; elsewhere each test is skipped with the
reason, except under ``CI=true``, where a missing tool fails it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from support import EVENT_TIMEOUT, ROOT, ServerProcess, make_certificates, recv_text

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def require(tool: str | None, name: str) -> str:
    """The path of ``tool``; skip the test without it, or fail it under ``CI=true``, where
    a missing tool would hide a broken feature behind a skip."""
    if tool is None:
        reason = f"{name} is not installed (scripts/test installs it when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return tool


def readme_nginx_snippet() -> str:
    """The nginx block of README.md's "Behind nginx" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Behind nginx") :]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_nginx_snippet_proxies_websockets_with_the_clients_address(
    tmp_path: Path,
) -> None:
    """Through nginx (TLS), a client from 127.0.0.2 chats, and the server logs it as
    127.0.0.2 via nginx's own connection."""
    nginx = require(NGINX, "nginx")
    certificates = make_certificates(tmp_path)
    server = ServerProcess("--trusted-proxy", "127.0.0.1")
    nginx_port = free_port()
    snippet = (
        readme_nginx_snippet()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{nginx_port} ssl;")
        .replace("/etc/letsencrypt/live/chat.example.org/fullchain.pem", certificates.certfile)
        .replace("/etc/letsencrypt/live/chat.example.org/privkey.pem", certificates.keyfile)
        .replace("http://127.0.0.1:8765", f"http://127.0.0.1:{server.port}")
    )
    assert str(server.port) in snippet
    assert certificates.keyfile in snippet
    config = tmp_path / "nginx.conf"
    config.write_text(
        # At "notice" nginx says when it starts its workers: it is listening by then.
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log stderr notice;\n"
        "events {}\nhttp {\n    access_log off;\n"
        + "".join(
            f"    {kind}_temp_path {tmp_path}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + snippet
        + "}\n"
    )
    nginx = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ws_url = f"wss://127.0.0.1:{nginx_port}/"
        assert nginx.stderr is not None
        started = []
        while not started:
            line = nginx.stderr.readline()
            assert line, "nginx exited before it listened"
            started = re.findall(r"start worker process", line)
        with connect(
            ws_url,
            ssl=certificates.client_context(),
            open_timeout=EVENT_TIMEOUT,
            proxy=None,
            source_address=("127.0.0.2", 0),
        ) as ws:
            line = server.wait_for(
                re.compile(r"Client #(\d+) connected from 127\.0\.0\.2 via 127\.0\.0\.1:\d+\n")
            )
            ws.send("through nginx")
            assert recv_text(ws) == "You said: through nginx"
        server.wait_for(f"Client #{line.group(1)} (127.0.0.2) disconnected: 1000")
    finally:
        nginx.terminate()
        nginx.wait(EVENT_TIMEOUT)
        if nginx.stderr is not None:
            nginx.stderr.close()
        server.stop()


def readme_systemd_units() -> list[str]:
    """The README's unit, and the same with its TLS lines in place of its ExecStart."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### A systemd service") :]
    unit, tls_lines = re.findall(r"```ini\n(.*?)```", section, re.S)
    start, end = unit.index("ExecStart="), unit.index("Restart=on-failure")
    return [unit, unit[:start] + tls_lines + unit[end:]]


def test_the_readme_systemd_units_verify(tmp_path: Path) -> None:
    """Both units pass systemd-analyze verify (the program path and the user made to
    exist here)."""
    systemd_analyze = require(SYSTEMD_ANALYZE, "systemd-analyze")
    program = Path(sys.executable).parent / "trio-chat-server"
    assert program.exists()
    for number, unit in enumerate(readme_systemd_units()):
        path = tmp_path / f"trio-chat-{number}.service"
        path.write_text(
            unit.replace("/opt/trio_chat/bin/trio-chat-server", str(program))
            .replace("User=trio-chat", "User=root")
            .replace("Group=trio-chat", "Group=root")
        )
        result = subprocess.run(
            [systemd_analyze, "verify", str(path)],
            capture_output=True,
            text=True,
            timeout=EVENT_TIMEOUT,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
