"""Plain mode end to end: nicknames, rooms, presence and the operator, as websocat sees them.

The server is a subprocess (``python -m trio_chat.server``); every client is the
independent ``websockets`` library's sync client offering no subprotocol, so it speaks the
plain mode of ``docs/protocol.md``. Frames are split on ``\\n`` and read line by line (the
server may batch). Nothing is awaited by time: to show that a line did *not* arrive, a
later event is made to happen and must be the very next line received.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from trio_chat.core.commands import HELP

from support import PlainClient, ServerProcess, open_plain, open_plains

# --- helpers -------------------------------------------------------------------------------


def wait_disconnected(server: ServerProcess, client: PlainClient) -> None:
    """Wait until the server has logged ``client``'s departure (it has left the chat)."""
    server.wait_for(f"Client #{client.key} (127.0.0.1:{client.port}) disconnected: ")


def name_all(clients: list[PlainClient], *nicks: str) -> None:
    """Give ``clients[i]`` the nick ``nicks[i]`` in turn, all of them being in the lobby
    only (and the lobby under the presence limit); every other client sees each join."""
    for i, nick in enumerate(nicks):
        clients[i].ask(f"/nick {nick}", f"* You are now known as {nick}")
        for other in clients[:i] + clients[i + 1 :]:
            other.expect(f"* {nick} joined lobby")


@contextmanager
def named_clients(server: ServerProcess, *nicks: str) -> Iterator[list[PlainClient]]:
    """One plain client per nick, all in the lobby, each named and the notices consumed."""
    with open_plains(server, len(nicks)) as clients:
        name_all(clients, *nicks)
        yield clients


# --- nicknames -----------------------------------------------------------------------------


def test_nick_names_the_sender(server_process: type[ServerProcess]) -> None:
    """After /nick others read 'alice says:'; anonymous lines read 'Someone says:'."""
    server = server_process()
    with open_plains(server, 2) as (a, b):
        a.ask("/nick alice", "* You are now known as alice")
        b.expect("* alice joined lobby")
        a.ask("hi", "You said: hi")
        b.expect("alice says: hi")
        b.ask("hello", "You said: hello")
        a.expect("Someone says: hello")


def test_taken_and_invalid_nicks_get_one_error_line(server_process: type[ServerProcess]) -> None:
    """Taken (ignoring case), reserved and invalid nicks get one Error line to the sender."""
    server = server_process()
    with open_plains(server, 2) as (a, b):
        a.ask("/nick alice", "* You are now known as alice")
        b.expect("* alice joined lobby")
        b.ask("/nick ALICE", "Error: nick ALICE is taken")
        b.ask("/nick server", "Error: nick server is taken")
        b.ask("/nick Server", "Error: nick Server is taken")
        b.ask("/nick bad name!", "Error: usage: /nick NAME")
        rule = "use 1-32 letters, digits, '_', '-' or '.'"
        b.ask("/nick bad!", f"Error: invalid nickname 'bad!': {rule}")
        b.ask("/nick " + "x" * 33, f"Error: invalid nickname '{'x' * 33}': {rule}")
        b.ask("/nick café", f"Error: invalid nickname 'café': {rule}")
        # Still anonymous and still connected; alice saw none of it.
        b.ask("still here", "You said: still here")
        a.expect("Someone says: still here")
        b.ask("/nick " + "b" * 32, "* You are now known as " + "b" * 32)
        a.expect("* " + "b" * 32 + " joined lobby")


def test_presence_of_named_members_only(server_process: type[ServerProcess]) -> None:
    """First nick reads as a join, then 'is now known as', 'quit'; anonymous ones are silent."""
    server = server_process()
    with open_plains(server, 2) as (a, b):
        a.ask("/nick alice", "* You are now known as alice")
        b.expect("* alice joined lobby")
        with open_plain(server) as c:
            c.ask("anonymous here", "You said: anonymous here")
            a.expect("Someone says: anonymous here")
            b.expect("Someone says: anonymous here")
        wait_disconnected(server, c)
        # Neither the anonymous connect nor its disconnect produced a line.
        a.ask("/nick al", "* You are now known as al")
        b.expect("* alice is now known as al")
        a.ws.close()
        b.expect("* al quit")
        b.ask("/who", "* In lobby: 1 without a nickname")


# --- rooms ---------------------------------------------------------------------------------


def test_rooms_isolate_lines(server_process: type[ServerProcess]) -> None:
    """A line goes to the sender's current room only; other rooms' lines carry [room]."""
    server = server_process()
    with named_clients(server, "alice", "bob", "carol") as (alice, bob, carol):
        alice.ask("/join DEV", "* You joined dev (1 here)")
        carol.ask("/join dev", "* You joined dev (2 here)")
        alice.expect("* carol joined dev")

        alice.ask("dev only", "You said: dev only")
        carol.expect("alice says: dev only")
        # bob, in the lobby only, got neither the join nor the line.
        bob.ask("lobby line", "You said: lobby line")
        alice.expect("[lobby] bob says: lobby line")
        carol.expect("[lobby] bob says: lobby line")

        alice.ask("/join lobby", "* You are now talking in lobby (3 here)")
        carol.ask("in dev", "You said: in dev")
        alice.expect("[dev] carol says: in dev")
        alice.ask("back in the lobby", "You said: back in the lobby")
        bob.expect("alice says: back in the lobby")
        carol.expect("[lobby] alice says: back in the lobby")


def test_leave_rules(server_process: type[ServerProcess]) -> None:
    """/leave leaves a room one is in, never the last one; an emptied room disappears."""
    server = server_process()
    with named_clients(server, "alice", "bob") as (alice, bob):
        alice.ask("/leave", "Error: lobby is your only room; /join another first")
        alice.ask("/leave lobby", "Error: lobby is your only room; /join another first")
        alice.ask("/leave dev", "Error: you are not in dev")
        alice.ask("/join dev", "* You joined dev (1 here)")
        alice.ask("/rooms", "* Rooms: dev (1), lobby (2)")
        alice.ask("/leave dev", "* You left dev; now talking in lobby")
        alice.ask("/rooms", "* Rooms: lobby (2)")
        alice.ask("/join dev", "* You joined dev (1 here)")
        alice.ask("/leave", "* You left dev; now talking in lobby")
        alice.ask("/join dev", "* You joined dev (1 here)")
        alice.ask("/leave lobby", "* You left lobby; now talking in dev")
        bob.expect("* alice left lobby")
        alice.ask("/leave", "Error: dev is your only room; /join another first")
        alice.ask("/rooms", "* Rooms: dev (1), lobby (1)")
        # bob saw one notice only: alice's joins and leaves of dev were not his business.
        bob.ask("/who", "* In lobby: bob")


def test_rooms_and_who_list_members(server_process: type[ServerProcess]) -> None:
    """/rooms counts every member; /who names them and counts the anonymous ones."""
    server = server_process()
    with (
        named_clients(server, "alice", "bob", "carol") as (alice, bob, carol),
        open_plain(server) as anonymous,
    ):
        alice.ask("/join dev", "* You joined dev (1 here)")
        carol.ask("/join dev", "* You joined dev (2 here)")
        alice.expect("* carol joined dev")
        for client in (alice, bob, carol, anonymous):
            client.ask("/rooms", "* Rooms: dev (2), lobby (4)")
        alice.ask("/who", "* In dev: alice and carol")
        bob.ask("/who", "* In lobby: alice, bob, carol and 1 without a nickname")
        bob.ask("/who dev", "* In dev: alice and carol")
        anonymous.ask("/who DEV", "* In dev: alice and carol")
        alice.ask("/who lobby", "* In lobby: alice, bob, carol and 1 without a nickname")
        bob.ask("/who nosuch", "Error: there is no room nosuch")


# --- private messages ------------------------------------------------------------------------


def test_private_message_reaches_only_its_target(server_process: type[ServerProcess]) -> None:
    """/msg reaches the target alone; an unknown nick or an anonymous sender get an error."""
    server = server_process()
    with (
        named_clients(server, "alice", "bob", "carol") as (alice, bob, carol),
        open_plain(server) as anonymous,
    ):
        alice.ask("/msg bob psst", "[private] You said to bob: psst")
        bob.expect("[private] alice says: psst")
        alice.ask(
            "/msg BOB case does not matter", "[private] You said to bob: case does not matter"
        )
        bob.expect("[private] alice says: case does not matter")
        alice.ask("/msg zed psst", "Error: nobody is called zed")
        anonymous.ask("/msg bob psst", "Error: set a nickname with /nick before /msg")
        # carol and the anonymous member saw no private line, bob no error.
        alice.ask("public", "You said: public")
        for client in (bob, carol, anonymous):
            client.expect("alice says: public")


# --- actions, topics, escapes, unknown commands, help -------------------------------------------


def test_me_topic_and_slash_escape(server_process: type[ServerProcess]) -> None:
    """/me and /topic reach the room's members; //text is a chat line starting with '/'."""
    server = server_process()
    with named_clients(server, "alice", "bob", "carol") as (alice, bob, carol):
        alice.ask("/join dev", "* You joined dev (1 here)")
        bob.ask("/join dev", "* You joined dev (2 here)")
        alice.expect("* bob joined dev")
        alice.ask("/me waves", "* alice waves")
        bob.expect("* alice waves")
        alice.ask("/topic", "* dev has no topic")
        alice.ask("/topic release day", "* alice set the topic of dev: release day")
        bob.expect("* alice set the topic of dev: release day")
        bob.ask("/topic", "* Topic of dev: release day")
        alice.ask("//not a command", "You said: /not a command")
        bob.expect("alice says: /not a command")
        # carol, in the lobby only, saw none of it.
        carol.ask("/topic", "* lobby has no topic")
        carol.ask("lobby", "You said: lobby")


def test_unknown_command_keeps_the_connection(server_process: type[ServerProcess]) -> None:
    """An unknown command gets one Error line to its sender; the connection stays open."""
    server = server_process()
    with open_plains(server, 2) as (a, b):
        a.ask("/frobnicate", "Error: unknown command /frobnicate; /help lists the commands")
        a.ask("/frobnicate now", "Error: unknown command /frobnicate; /help lists the commands")
        a.ask("still open", "You said: still open")
        b.expect("Someone says: still open")


def test_help_lists_every_command(server_process: type[ServerProcess]) -> None:
    """/help answers one '* ' line per command, usage then description, /nick first."""
    server = server_process()
    with open_plain(server) as client:
        client.send("/help")
        lines = [client.line() for _ in HELP]
        assert lines[0].startswith("* /nick NAME ")
        for line, (usage, description) in zip(lines, HELP, strict=True):
            assert re.fullmatch(rf"\* {re.escape(usage)} +{re.escape(description)}", line), line
        client.ask("after help", "You said: after help")


# --- the presence limit -----------------------------------------------------------------------


def test_presence_limit_silences_crowded_rooms(server_process: type[ServerProcess]) -> None:
    """--presence-limit 2: rooms of 3 get no presence (/who lists all), rooms of 2 do."""
    server = server_process("--presence-limit", "2")
    with open_plains(server, 3) as (a, b, c):
        # The lobby has 3 members: nobody hears of anyone's first nick.
        a.ask("/nick alice", "* You are now known as alice")
        b.ask("/nick bob", "* You are now known as bob")
        c.ask("/nick carol", "* You are now known as carol")
        c.ask("/who", "* In lobby: alice, bob and carol")
        a.ask("/nick al", "* You are now known as al")
        a.ask("first", "You said: first")
        b.expect("al says: first")
        c.expect("al says: first")

        # dev with 2 members: a join is announced...
        a.ask("/join dev", "* You joined dev (1 here)")
        b.ask("/join dev", "* You joined dev (2 here)")
        a.expect("* bob joined dev")
        # ...and so is a nick change, to dev's members only (the lobby has 3).
        b.ask("/nick bobby", "* You are now known as bobby")
        a.expect("* bob is now known as bobby")
        c.ask("/who", "* In lobby: al, bobby and carol")

        # The third member of dev is not announced.
        c.ask("/join dev", "* You joined dev (3 here)")
        c.ask("dev is full", "You said: dev is full")
        a.expect("carol says: dev is full")
        b.expect("carol says: dev is full")
        a.ask("/who", "* In dev: al, bobby and carol")

        # carol quits from two rooms of 3: nobody is told.
        c.ws.close()
        wait_disconnected(server, c)
        a.ask("second", "You said: second")
        b.expect("al says: second")

        # bobby quits from two rooms of 2: al is told once.
        b.ws.close()
        a.expect("* bobby quit")
        server.send_console("after the quit")
        a.expect("🟢 Server: after the quit")


# --- leaving -------------------------------------------------------------------------------------


def test_quit_with_reason_closes_1000(server_process: type[ServerProcess]) -> None:
    """/quit bye closes with 1000 'bye' and the others read '* alice quit (bye)'."""
    server = server_process()
    with named_clients(server, "alice", "bob", "carol") as (alice, bob, carol):
        alice.send("/quit bye")
        close = alice.expect_close()
        assert (close.code, close.reason) == (1000, "bye")
        bob.expect("* alice quit (bye)")
        carol.expect("* alice quit (bye)")
        carol.send("/quit")
        assert carol.expect_close().code == 1000
        bob.expect("* carol quit")
        bob.ask("/who", "* In lobby: bob")


# --- the operator --------------------------------------------------------------------------------


def test_operator_kick(server_process: type[ServerProcess]) -> None:
    """Console /kick closes the member with 1008 and its reason and tells its rooms once."""
    server = server_process()
    with named_clients(server, "alice", "bob", "carol") as (alice, bob, carol):
        # alice shares two rooms with bob; carol shares none.
        bob.ask("/join dev", "* You joined dev (1 here)")
        alice.ask("/join dev", "* You joined dev (2 here)")
        bob.expect("* alice joined dev")
        carol.ask("/join ops", "* You joined ops (1 here)")
        carol.ask("/leave lobby", "* You left lobby; now talking in ops")
        alice.expect("[lobby] * carol left lobby")
        bob.expect("[lobby] * carol left lobby")

        server.send_console("/kick bob spamming")
        close = bob.expect_close()
        assert (close.code, close.reason) == (1008, "spamming")
        alice.expect("* bob was kicked (spamming)")
        server.wait_for("\nKicked bob (spamming)\n")

        server.send_console("/kick nobody")
        server.wait_for("\nNobody is called nobody\n")
        server.send_console("after the kick")
        alice.expect("🟢 Server: after the kick")
        carol.expect("🟢 Server: after the kick")
        alice.ask("/who", "* In dev: alice")


def test_kick_names_the_member_as_known(server_process: type[ServerProcess]) -> None:
    """/kick matches the nick ignoring case; the notice names the member as it is known."""
    server = server_process()
    with named_clients(server, "alice", "bob") as (alice, bob):
        server.send_console("/kick BOB")
        close = bob.expect_close()
        assert (close.code, close.reason) == (1008, "kicked by the operator")
        alice.expect("* bob was kicked (kicked by the operator)")


def test_operator_say_and_listings(server_process: type[ServerProcess]) -> None:
    """Console /say reaches one room's members; /rooms and /who describe the chat."""
    server = server_process()
    with named_clients(server, "alice", "bob", "carol") as (alice, bob, carol):
        alice.ask("/join dev", "* You joined dev (1 here)")
        carol.ask("/join dev", "* You joined dev (2 here)")
        alice.expect("* carol joined dev")
        carol.ask("/join lobby", "* You are now talking in lobby (3 here)")

        server.send_console("/say dev hello devs")
        alice.expect("🟢 Server: hello devs")
        carol.expect("[dev] 🟢 Server: hello devs")
        server.wait_for("\n📤 Server said in dev (2 reached): hello devs\n")
        server.send_console("hello all")
        for client in (alice, bob, carol):
            client.expect("🟢 Server: hello all")

        server.send_console("/rooms")
        server.wait_for("\nRooms: dev (2), lobby (3)\n")
        server.send_console("/who dev")
        server.wait_for("\nIn dev: alice and carol\n")
        server.send_console("/who")
        server.wait_for("\nIn dev: alice and carol\nIn lobby: alice, bob and carol\n")
        server.send_console("/say nosuch hello")
        server.wait_for("\nError: there is no room nosuch\n")
