"""What the operator sees of a running server, in-process: its connection log and console.

The server runs in the test's nursery on a real socket (``inproc``); its log lines are read
as they are logged (:class:`inproc.ServerLog`), the very lines an operator reads on the
terminal, and console lines are answered by the console's own handler. Clients are the
independent ``websockets`` library's Trio client in plain mode. To show that a line did
*not* reach a client, a later line is sent and must be the very next one received.
"""

from __future__ import annotations

import re

from inproc import LiveServer, open_plain

from trio_chat.server.console import CONSOLE_HELP

pytest_plugins = ["inproc"]


async def test_log_shows_peer_address_and_close_code(live_server: LiveServer) -> None:
    """The log names each client's address on connect and its close code on disconnect."""
    async with open_plain(live_server) as client:
        connected = f"✅ Client #{client.key} connected from 127.0.0.1:{client.port}"
        assert connected in live_server.log.messages
        await client.ws.aclose()
    disconnected = (
        f"❌ Client #{client.key} (127.0.0.1:{client.port}) disconnected: 1000 (normal closure)"
    )
    await live_server.wait_for(re.compile(f"^{re.escape(disconnected)}$"))


async def test_unknown_console_command_reaches_nobody(live_server: LiveServer) -> None:
    """An unknown console command is answered on the console and sends clients nothing:
    the next line a client gets is the operator's next broadcast."""
    async with open_plain(live_server) as client:
        assert live_server.console("/nope") == f"Unknown console command /nope. {CONSOLE_HELP}"
        assert live_server.console("after the command") == "📤 Server broadcast: after the command"
        await client.expect("🟢 Server: after the command")
