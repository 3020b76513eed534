"""Bans and mutes in a running server: from the operator console, from an admin's own
client and over the control socket; a banned address, nick or session refused at the
handshake with 403 and one log line, a banned nick at /nick, a banned principal at
login and resume; open connections closed; mutes per room; bans, mutes and topics kept
across a restart (SQLite). In-process servers (``inproc``), the ``websockets`` client;
limits: the defaults (nothing here sends fast)."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import websockets
from inproc import (
    JsonClient,
    LiveServer,
    StartLiveServer,
    connect_to,
    lose_connection,
    open_json,
    open_plain,
    wait_disconnected,
)
from websockets.exceptions import InvalidStatus
from websockets.frames import Close

from trio_chat.core import render
from trio_chat.server.console import answer_console_line
from trio_chat.server.control import control_request

from support import EVENT_TIMEOUT, PROTOCOL, error

pytest_plugins = ["inproc"]

SECRET = "0123456789abcdef0123456789abcdef"


def token(sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 600, **claims}, SECRET, "HS256")


async def answer(client: JsonClient, command: dict[str, Any]) -> dict[str, Any]:
    """Send ``command``; its answer (an ack or error with its cid), skipping other events."""
    await client.send(command)
    while True:
        event = await client.event()
        if event.get("type") in ("ack", "error") and event.get("cid") == command["cid"]:
            return event


async def closed(client: JsonClient) -> Close | None:
    """Read ``client`` until the server closes it; the close frame received."""
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:  # noqa: PT012
        while True:
            await client.event()
    return info.value.rcvd


async def console(live: LiveServer, line: str) -> str | None:
    """Type ``line`` at the operator console, moderation commands included."""
    with trio.fail_after(EVENT_TIMEOUT):
        return await answer_console_line(line, live.server.chat, live.server.shutdown)


async def refused(live: LiveServer, query: str = "", **headers: str) -> tuple[int, str]:
    """The HTTP status and body a handshake at ``query`` is refused with."""
    with pytest.raises(InvalidStatus) as info:
        async with connect_to(live.url + query, [PROTOCOL], headers):
            pass
    response = info.value.response
    return response.status_code, response.body.decode()


@asynccontextmanager
async def json_client(live: LiveServer, query: str = "") -> AsyncIterator[JsonClient]:
    """A JSON client that has read nothing yet."""
    async with connect_to(live.url + query, [PROTOCOL]) as ws:
        yield JsonClient(ws)


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return str(path)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A folder with a path short enough for a Unix socket."""
    folder = Path(tempfile.mkdtemp(prefix="tc-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_a_banned_address_is_closed_and_refused_with_403(live_server: LiveServer) -> None:
    """The console bans 127.0.0.0/8: the open connection is closed with 1008 and the
    reason, the next handshake gets 403 and one log line; /unban lets it in again."""
    async with open_plain(live_server) as plain:
        said = await console(live_server, "/ban 127.0.0.0/8 1h flooding")
        assert said is not None
        assert said.startswith("* Banned 127.0.0.0/8 (flooding) until ")
        assert said.endswith(" UTC; closed 1 connection")
        close = await plain.expect_close()
        assert (close.code, close.reason) == (1008, "banned: flooding")
    assert await refused(live_server) == (403, "banned\n")
    await live_server.wait_for(
        re.compile(r"^127\.0\.0\.1:\d+: refused GET /: 403 banned \(127\.0\.0\.0/8\)$")
    )
    listed = await console(live_server, "/bans")
    assert listed is not None
    assert listed.startswith("* 127.0.0.0/8 (flooding) until ")
    assert listed.endswith(", by operator")
    assert await console(live_server, "/unban 127.0.0.0/8") == "* Lifted the ban on 127.0.0.0/8"
    assert await console(live_server, "/bans") == "* Nobody is banned"
    async with open_plain(live_server) as plain:
        await plain.ask("back", "You said: back")


async def test_a_banned_nick_is_kicked_and_refused_wherever_it_shows(
    live_server: LiveServer,
) -> None:
    """Banning alice kicks her (announced); ?nick=alice gets 403; /nick alice gets
    ``banned``, in any case."""
    async with open_plain(live_server) as alice, open_plain(live_server) as bob:
        await alice.ask("/nick alice", "* You are now known as alice")
        await bob.expect("* alice joined lobby")
        await bob.ask("/nick bob", "* You are now known as bob")
        await alice.expect("* bob joined lobby")
        assert await console(live_server, "/ban Alice spam") == (
            "* Banned alice (spam) for good; closed 1 connection"
        )
        await bob.expect("* alice was kicked (banned: spam)")
        close = await alice.expect_close()
        assert (close.code, close.reason) == (1008, "banned: spam")
        await wait_disconnected(live_server, alice)
        await bob.ask("/nick ALICE", "Error: you are banned (spam) for good")
    assert await refused(live_server, "/?nick=alice") == (403, "banned\n")
    async with open_json(live_server) as carol:
        refusal = await carol.call({"type": "nick", "nick": "alice", "cid": 1})
        assert refusal == error("banned", "you are banned (spam) for good", 1)


async def test_a_session_cannot_come_back_as_a_banned_nick(live_server: LiveServer) -> None:
    """dave's connection is lost (its nick held for its session); dave is banned: the
    session's URL resume gets 403, its resume command ``banned``."""
    async with open_json(live_server) as first:
        assert (await first.call({"type": "nick", "nick": "dave", "cid": 1}))["type"] == "ack"
        secret = first.session
        await lose_connection(first)
        await live_server.wait_for("disconnected: 1006")
    assert secret is not None
    assert await console(live_server, "/ban dave") == "* Banned dave for good"
    assert await refused(live_server, f"/?session={secret}") == (403, "banned\n")
    async with open_json(live_server) as other:
        refusal = await other.call({"type": "resume", "since": 0, "session": secret, "cid": 2})
        assert refusal == error("banned", "you are banned for good", 2)


async def test_banning_a_principal_ends_its_sessions(live_server: LiveServer) -> None:
    """A principal banned while its connection is lost: its session is over."""
    async with open_json(live_server) as first:
        secret = first.session
        principal = next(iter(live_server.server.chat.members.values())).principal.id
        await lose_connection(first)
        await live_server.wait_for("disconnected: 1006")
    await console(live_server, f"/ban principal:{principal}")
    async with open_json(live_server) as other:
        refusal = await other.call({"type": "resume", "since": 0, "session": secret, "cid": 3})
        assert refusal == error("invalid_session", render.INVALID_SESSION, 3)


async def test_admins_ban_from_their_client_and_others_may_not(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """An admin's JSON ban closes the banned token's connection; a banned token's login
    at the handshake gets 403; a non-admin gets ``not_admin``."""
    live = await start_live_server(jwt_secret_file=secret_file)
    async with (
        json_client(live, f"/?token={token('root', admin=True)}") as root,
        json_client(live, f"/?token={token('eve')}") as eve,
    ):
        assert (await root.event())["type"] == "welcome"
        assert (await eve.event())["type"] == "welcome"
        assert await answer(eve, {"type": "bans", "cid": 1}) == error(
            "not_admin", "only an admin may do that", 1
        )
        banned = await answer(
            root, {"type": "ban", "target": "principal:token:eve", "duration": "10m", "cid": 2}
        )
        assert banned["type"] == "ack", banned
        assert banned["closed"] == 1
        assert banned["ban"]["target"] == "principal:token:eve"
        assert banned["ban"]["by"] == "root"
        close = await closed(eve)
        assert close is not None
        assert (close.code, close.reason) == (1008, "banned")
    assert await refused(live, f"/?token={token('eve')}") == (403, "banned\n")


async def test_a_mute_keeps_a_nick_quiet_in_one_room(live_server: LiveServer) -> None:
    """Muted in the lobby, bob gets ``muted`` there (and for a topic), speaks elsewhere,
    and again in the lobby once unmuted."""
    async with open_plain(live_server) as bob, open_json(live_server) as watcher:
        await bob.ask("/nick bob", "* You are now known as bob")
        assert (await watcher.event())["event"] == "join"
        assert await console(live_server, "/mute lobby bob 10m") is not None
        await bob.ask("hello", "Error: " + _muted_text(live_server, "lobby"))
        await bob.ask("/topic mine", "Error: " + _muted_text(live_server, "lobby"))
        await bob.ask("/join dev", "* You joined dev (1 here)")
        await bob.ask("hi dev", "You said: hi dev")
        await bob.ask("/join lobby", "* You are now talking in lobby (2 here)")
        assert await console(live_server, "/unmute lobby bob") == "* bob may speak in lobby again"
        await bob.ask("free", "You said: free")
        assert (await watcher.event())["text"] == "free"


def _muted_text(live: LiveServer, room: str) -> str:
    (mute,) = live.server.chat.moderation.mutes(room)
    expires = mute.row.expires
    assert expires is not None
    return f"you are muted in {room} until {expires[:10]} {expires[11:16]} UTC"


async def test_bans_mutes_and_topics_survive_a_restart(
    start_live_server: StartLiveServer, tmp_path: Path
) -> None:
    """On the same SQLite file, a restarted server keeps the ban, the mute and the
    topic of a room nobody is in any more."""
    db = str(tmp_path / "history.db")
    first = await start_live_server(db=db)
    async with open_plain(first) as alice:
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/topic release day", "* Someone set the topic of dev: release day")
    await console(first, "/ban mallory")
    await console(first, "/mute dev bob")
    first.server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await first.server.stopped.wait()

    second = await start_live_server(db=db)
    assert await refused(second, "/?nick=mallory") == (403, "banned\n")
    async with open_plain(second) as bob:
        await bob.ask("/nick bob", "* You are now known as bob")
        await bob.ask("/join dev", "* You joined dev (1 here). Topic: release day")
        await bob.ask("quiet?", "Error: you are muted in dev for good")


async def test_the_control_socket_bans_lists_and_lifts(
    start_live_server: StartLiveServer, socket_dir: Path
) -> None:
    """ban.add closes what it bans; ban.list shows it; ban.remove lifts it; a bad
    target is answered in one line."""
    live = await start_live_server(control_socket=str(socket_dir / "control.sock"))
    path = live.server.control_socket
    assert path is not None
    async with open_plain(live) as plain:
        await plain.ask("/nick zed", "* You are now known as zed")
        with trio.fail_after(EVENT_TIMEOUT):
            added = await control_request(path, {"op": "ban.add", "target": "zed"})
        assert added["ok"] is True
        assert added["closed"] == 1
        assert added["ban"] == {
            "target": "zed",
            "kind": "nick",
            "reason": None,
            "by": "operator",
            "created": added["ban"]["created"],
            "expires": None,
        }
        close = await plain.expect_close()
        assert (close.code, close.reason) == (1008, "banned")
    with trio.fail_after(EVENT_TIMEOUT):
        listed = await control_request(path, {"op": "ban.list"})
        assert [ban["target"] for ban in listed["bans"]] == ["zed"]
        assert await control_request(path, {"op": "ban.remove", "target": "zed"}) == {
            "ok": True,
            "target": "zed",
        }
        assert await control_request(path, {"op": "ban.remove", "target": "zed"}) == {
            "ok": False,
            "error": "zed is not banned",
        }
        bad = await control_request(path, {"op": "ban.add", "target": "no such!"})
    assert bad["ok"] is False
    assert bad["error"].startswith("cannot ban 'no such!'")


async def test_a_banned_login_is_refused_and_closed(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """A token login of a banned principal, during the login phase: ``banned``, then
    1008; the log says so in one line."""
    live = await start_live_server(jwt_secret_file=secret_file)
    await console(live, "/ban principal:token:eve 1d abuse")
    (ban,) = live.server.chat.moderation.bans()
    text = render.banned("abuse", ban.row.expires)
    async with json_client(live) as eve:
        refusal = await eve.call({"type": "login", "token": token("eve"), "cid": 1})
        assert refusal == error("banned", text, 1)
        close = await eve.expect_close()
        assert (close.code, close.reason) == (1008, text)
    await live.wait_for(re.compile(r"refused: banned login as eve$"))


async def test_an_address_banned_during_the_login_phase_cannot_log_in(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """Connected before the ban, still logging in: its login is refused all the same."""
    live = await start_live_server(jwt_secret_file=secret_file)
    async with json_client(live) as fred:
        await live.wait_for("connected from 127.0.0.1")
        await console(live, "/ban 127.0.0.1")
        refusal = await fred.call({"type": "login", "token": token("fred"), "cid": 1})
        assert refusal == error("banned", "you are banned for good", 1)
        close = await fred.expect_close()
        assert (close.code, close.reason) == (1008, "you are banned for good")


async def test_a_muted_plain_guest_stays_muted_under_a_new_nick(live_server: LiveServer) -> None:
    """The mute follows the guest that held the nick, not the nick alone."""
    async with open_plain(live_server) as guest:
        await guest.ask("/nick troll", "* You are now known as troll")
        await console(live_server, "/mute lobby troll")
        await guest.ask("/nick angel", "* You are now known as angel")
        await guest.ask("hi", "Error: you are muted in lobby for good")
