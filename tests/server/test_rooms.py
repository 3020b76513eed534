"""Plain mode end to end: nicknames, rooms, presence and the operator, as websocat sees them.

The server runs in the test's nursery on a real socket (``inproc``); every client is the
independent ``websockets`` library's Trio client offering no subprotocol, so it speaks the
plain mode of ``docs/protocol.md``, and the operator console is answered in-process. Frames
are split on ``\\n`` and read line by line (the server may batch). Nothing is awaited by
time: to show that a line did *not* arrive, a later event is made to happen and must be the
very next line received.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from inproc import (
    LiveServer,
    PlainClient,
    StartLiveServer,
    open_plain,
    open_plains,
    wait_disconnected,
)

from trio_chat.core.commands import HELP

pytest_plugins = ["inproc"]

# --- helpers -------------------------------------------------------------------------------


async def name_all(clients: list[PlainClient], *nicks: str) -> None:
    """Give ``clients[i]`` the nick ``nicks[i]`` in turn, all of them being in the lobby
    only (and the lobby under the presence limit); every other client sees each join."""
    for i, nick in enumerate(nicks):
        await clients[i].ask(f"/nick {nick}", f"* You are now known as {nick}")
        for other in clients[:i] + clients[i + 1 :]:
            await other.expect(f"* {nick} joined lobby")


@asynccontextmanager
async def named_clients(live: LiveServer, *nicks: str) -> AsyncIterator[list[PlainClient]]:
    """One plain client per nick, all in the lobby, each named and the notices consumed."""
    async with open_plains(live, len(nicks)) as clients:
        await name_all(clients, *nicks)
        yield clients


# --- nicknames -----------------------------------------------------------------------------


async def test_nick_names_the_sender(live_server: LiveServer) -> None:
    """After /nick others read 'alice says:'; anonymous lines read 'Someone says:'."""
    async with open_plains(live_server, 2) as (a, b):
        await a.ask("/nick alice", "* You are now known as alice")
        await b.expect("* alice joined lobby")
        await a.ask("hi", "You said: hi")
        await b.expect("alice says: hi")
        await b.ask("hello", "You said: hello")
        await a.expect("Someone says: hello")


async def test_taken_and_invalid_nicks_get_one_error_line(live_server: LiveServer) -> None:
    """Taken (ignoring case), reserved and invalid nicks get one Error line to the sender."""
    async with open_plains(live_server, 2) as (a, b):
        await a.ask("/nick alice", "* You are now known as alice")
        await b.expect("* alice joined lobby")
        await b.ask("/nick ALICE", "Error: nick ALICE is taken")
        await b.ask("/nick server", "Error: nick server is taken")
        await b.ask("/nick Server", "Error: nick Server is taken")
        await b.ask("/nick bad name!", "Error: usage: /nick NAME")
        rule = "use 1-32 letters, digits, '_', '-' or '.'"
        await b.ask("/nick bad!", f"Error: invalid nickname 'bad!': {rule}")
        await b.ask("/nick " + "x" * 33, f"Error: invalid nickname '{'x' * 33}': {rule}")
        await b.ask("/nick café", f"Error: invalid nickname 'café': {rule}")
        # Still anonymous and still connected; alice saw none of it.
        await b.ask("still here", "You said: still here")
        await a.expect("Someone says: still here")
        await b.ask("/nick " + "b" * 32, "* You are now known as " + "b" * 32)
        await a.expect("* " + "b" * 32 + " joined lobby")


async def test_presence_of_named_members_only(live_server: LiveServer) -> None:
    """First nick reads as a join, then 'is now known as', 'quit'; anonymous ones are silent."""
    async with open_plains(live_server, 2) as (a, b):
        await a.ask("/nick alice", "* You are now known as alice")
        await b.expect("* alice joined lobby")
        async with open_plain(live_server) as c:
            await c.ask("anonymous here", "You said: anonymous here")
            await a.expect("Someone says: anonymous here")
            await b.expect("Someone says: anonymous here")
        await wait_disconnected(live_server, c)
        # Neither the anonymous connect nor its disconnect produced a line.
        await a.ask("/nick al", "* You are now known as al")
        await b.expect("* alice is now known as al")
        await a.ws.aclose()
        await b.expect("* al quit")
        await b.ask("/who", "* In lobby: 1 without a nickname")


# --- rooms ---------------------------------------------------------------------------------


async def test_rooms_isolate_lines(live_server: LiveServer) -> None:
    """A line goes to the sender's current room only; other rooms' lines carry [room]."""
    async with named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol):
        await alice.ask("/join DEV", "* You joined dev (1 here)")
        await carol.ask("/join dev", "* You joined dev (2 here)")
        await alice.expect("* carol joined dev")

        await alice.ask("dev only", "You said: dev only")
        await carol.expect("alice says: dev only")
        # bob, in the lobby only, got neither the join nor the line.
        await bob.ask("lobby line", "You said: lobby line")
        await alice.expect("[lobby] bob says: lobby line")
        await carol.expect("[lobby] bob says: lobby line")

        await alice.ask("/join lobby", "* You are now talking in lobby (3 here)")
        await carol.ask("in dev", "You said: in dev")
        await alice.expect("[dev] carol says: in dev")
        await alice.ask("back in the lobby", "You said: back in the lobby")
        await bob.expect("alice says: back in the lobby")
        await carol.expect("[lobby] alice says: back in the lobby")


async def test_leave_rules(live_server: LiveServer) -> None:
    """/leave leaves a room one is in, never the last one; an emptied room disappears."""
    async with named_clients(live_server, "alice", "bob") as (alice, bob):
        await alice.ask("/leave", "Error: lobby is your only room; /join another first")
        await alice.ask("/leave lobby", "Error: lobby is your only room; /join another first")
        await alice.ask("/leave dev", "Error: you are not in dev")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/rooms", "* Rooms: dev (1), lobby (2)")
        await alice.ask("/leave dev", "* You left dev; now talking in lobby")
        await alice.ask("/rooms", "* Rooms: lobby (2)")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/leave", "* You left dev; now talking in lobby")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/leave lobby", "* You left lobby; now talking in dev")
        await bob.expect("* alice left lobby")
        await alice.ask("/leave", "Error: dev is your only room; /join another first")
        await alice.ask("/rooms", "* Rooms: dev (1), lobby (1)")
        # bob saw one notice only: alice's joins and leaves of dev were not his business.
        await bob.ask("/who", "* In lobby: bob")


async def test_rooms_and_who_list_members(live_server: LiveServer) -> None:
    """/rooms counts every member; /who names them and counts the anonymous ones."""
    async with (
        named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol),
        open_plain(live_server) as anonymous,
    ):
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await carol.ask("/join dev", "* You joined dev (2 here)")
        await alice.expect("* carol joined dev")
        for client in (alice, bob, carol, anonymous):
            await client.ask("/rooms", "* Rooms: dev (2), lobby (4)")
        await alice.ask("/who", "* In dev: alice and carol")
        await bob.ask("/who", "* In lobby: alice, bob, carol and 1 without a nickname")
        await bob.ask("/who dev", "* In dev: alice and carol")
        await anonymous.ask("/who DEV", "* In dev: alice and carol")
        await alice.ask("/who lobby", "* In lobby: alice, bob, carol and 1 without a nickname")
        await bob.ask("/who nosuch", "Error: there is no room nosuch")


# --- private messages ------------------------------------------------------------------------


async def test_private_message_reaches_only_its_target(live_server: LiveServer) -> None:
    """/msg reaches the target alone; an unknown nick or an anonymous sender get an error."""
    async with (
        named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol),
        open_plain(live_server) as anonymous,
    ):
        await alice.ask("/msg bob psst", "[private] You said to bob: psst")
        await bob.expect("[private] alice says: psst")
        await alice.ask(
            "/msg BOB case does not matter", "[private] You said to bob: case does not matter"
        )
        await bob.expect("[private] alice says: case does not matter")
        await alice.ask("/msg zed psst", "Error: nobody is called zed")
        await anonymous.ask("/msg bob psst", "Error: set a nickname with /nick before /msg")
        # carol and the anonymous member saw no private line, bob no error.
        await alice.ask("public", "You said: public")
        for client in (bob, carol, anonymous):
            await client.expect("alice says: public")


# --- actions, topics, escapes, unknown commands, help -------------------------------------------


async def test_me_topic_and_slash_escape(live_server: LiveServer) -> None:
    """/me and /topic reach the room's members; //text is a chat line starting with '/'."""
    async with named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol):
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await bob.ask("/join dev", "* You joined dev (2 here)")
        await alice.expect("* bob joined dev")
        await alice.ask("/me waves", "alice * waves")
        await bob.expect("alice * waves")
        await alice.ask("/topic", "* dev has no topic")
        await alice.ask("/topic release day", "* alice set the topic of dev: release day")
        await bob.expect("* alice set the topic of dev: release day")
        await bob.ask("/topic", "* Topic of dev: release day")
        await alice.ask("//not a command", "You said: /not a command")
        await bob.expect("alice says: /not a command")
        # carol, in the lobby only, saw none of it.
        await carol.ask("/topic", "* lobby has no topic")
        await carol.ask("lobby", "You said: lobby")


async def test_unknown_command_keeps_the_connection(live_server: LiveServer) -> None:
    """An unknown command gets one Error line to its sender; the connection stays open."""
    async with open_plains(live_server, 2) as (a, b):
        await a.ask("/frobnicate", "Error: unknown command /frobnicate; /help lists the commands")
        await a.ask(
            "/frobnicate now", "Error: unknown command /frobnicate; /help lists the commands"
        )
        await a.ask("still open", "You said: still open")
        await b.expect("Someone says: still open")


async def test_help_lists_every_command(live_server: LiveServer) -> None:
    """/help answers one '* ' line per command, usage then description, /nick first."""
    async with open_plain(live_server) as client:
        await client.send("/help")
        lines = [await client.line() for _ in HELP]
        assert lines[0].startswith("* /nick NAME ")
        for line, (usage, description) in zip(lines, HELP, strict=True):
            assert re.fullmatch(rf"\* {re.escape(usage)} +{re.escape(description)}", line), line
        await client.ask("after help", "You said: after help")


# --- the presence limit -----------------------------------------------------------------------


async def test_presence_limit_silences_crowded_rooms(start_live_server: StartLiveServer) -> None:
    """--presence-limit 2: rooms of 3 get no presence (/who lists all), rooms of 2 do."""
    live_server = await start_live_server(presence_limit=2)
    async with open_plains(live_server, 3) as (a, b, c):
        # The lobby has 3 members: nobody hears of anyone's first nick.
        await a.ask("/nick alice", "* You are now known as alice")
        await b.ask("/nick bob", "* You are now known as bob")
        await c.ask("/nick carol", "* You are now known as carol")
        await c.ask("/who", "* In lobby: alice, bob and carol")
        await a.ask("/nick al", "* You are now known as al")
        await a.ask("first", "You said: first")
        await b.expect("al says: first")
        await c.expect("al says: first")

        # dev with 2 members: a join is announced...
        await a.ask("/join dev", "* You joined dev (1 here)")
        await b.ask("/join dev", "* You joined dev (2 here)")
        await a.expect("* bob joined dev")
        # ...and so is a nick change, to dev's members only (the lobby has 3).
        await b.ask("/nick bobby", "* You are now known as bobby")
        await a.expect("* bob is now known as bobby")
        await c.ask("/who", "* In lobby: al, bobby and carol")

        # The third member of dev is not announced.
        await c.ask("/join dev", "* You joined dev (3 here)")
        await c.ask("dev is full", "You said: dev is full")
        await a.expect("carol says: dev is full")
        await b.expect("carol says: dev is full")
        await a.ask("/who", "* In dev: al, bobby and carol")

        # carol quits from two rooms of 3: nobody is told.
        await c.ws.aclose()
        await wait_disconnected(live_server, c)
        await a.ask("second", "You said: second")
        await b.expect("al says: second")

        # bobby quits from two rooms of 2: al is told once.
        await b.ws.aclose()
        await a.expect("* bobby quit")
        live_server.console("after the quit")
        await a.expect("🟢 Server: after the quit")


# --- leaving -------------------------------------------------------------------------------------


async def test_quit_with_reason_closes_1000(live_server: LiveServer) -> None:
    """/quit bye closes with 1000 'bye' and the others read '* alice quit (bye)'."""
    async with named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol):
        await alice.send("/quit bye")
        close = await alice.expect_close()
        assert (close.code, close.reason) == (1000, "bye")
        await bob.expect("* alice quit (bye)")
        await carol.expect("* alice quit (bye)")
        await carol.send("/quit")
        assert (await carol.expect_close()).code == 1000
        await bob.expect("* carol quit")
        await bob.ask("/who", "* In lobby: bob")


# --- the operator --------------------------------------------------------------------------------


async def test_operator_kick(live_server: LiveServer) -> None:
    """Console /kick closes the member with 1008 and its reason and tells its rooms once."""
    async with named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol):
        # alice shares two rooms with bob; carol shares none.
        await bob.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/join dev", "* You joined dev (2 here)")
        await bob.expect("* alice joined dev")
        await carol.ask("/join ops", "* You joined ops (1 here)")
        await carol.ask("/leave lobby", "* You left lobby; now talking in ops")
        await alice.expect("[lobby] * carol left lobby")
        await bob.expect("[lobby] * carol left lobby")

        assert live_server.console("/kick bob spamming") == "Kicked bob (spamming)"
        close = await bob.expect_close()
        assert (close.code, close.reason) == (1008, "spamming")
        await alice.expect("* bob was kicked (spamming)")

        assert live_server.console("/kick nobody") == "Nobody is called nobody"
        live_server.console("after the kick")
        await alice.expect("🟢 Server: after the kick")
        await carol.expect("🟢 Server: after the kick")
        await alice.ask("/who", "* In dev: alice")


async def test_kick_names_the_member_as_known(live_server: LiveServer) -> None:
    """/kick matches the nick ignoring case; the notice names the member as it is known."""
    async with named_clients(live_server, "alice", "bob") as (alice, bob):
        live_server.console("/kick BOB")
        close = await bob.expect_close()
        assert (close.code, close.reason) == (1008, "kicked by the operator")
        await alice.expect("* bob was kicked (kicked by the operator)")


async def test_operator_say_and_listings(live_server: LiveServer) -> None:
    """Console /say reaches one room's members; /rooms and /who describe the chat."""
    async with named_clients(live_server, "alice", "bob", "carol") as (alice, bob, carol):
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await carol.ask("/join dev", "* You joined dev (2 here)")
        await alice.expect("* carol joined dev")
        await carol.ask("/join lobby", "* You are now talking in lobby (3 here)")

        said = live_server.console("/say dev hello devs")
        assert said == "📤 Server said in dev (2 reached): hello devs"
        await alice.expect("🟢 Server: hello devs")
        await carol.expect("[dev] 🟢 Server: hello devs")
        live_server.console("hello all")
        for client in (alice, bob, carol):
            await client.expect("🟢 Server: hello all")

        assert live_server.console("/rooms") == "Rooms: dev (2), lobby (3)"
        assert live_server.console("/who dev") == "In dev: alice and carol"
        assert (
            live_server.console("/who") == "In dev: alice and carol\nIn lobby: alice, bob and carol"
        )
        assert live_server.console("/say nosuch hello") == "Error: there is no room nosuch"
