"""Durable history end to end, against "History and resume" in docs/protocol.md: what
needs a server process (a restart, kill -9, a second server on the same file, an unusable
file, the flags). History on join, paging and resume over the wire are in-process, in
tests/server/test_history_protocol.py.

Real server subprocesses (``python -m trio_chat.server``), most of them on a SQLite file in
the test's ``tmp_path`` so that a restart (SIGTERM) or a crash (SIGKILL) can be followed by
a new server on the same file. Clients are the independent ``websockets`` library's sync
client, plain or offering ``trio-chat.v1``. Frames are split on ``\\n`` (the server
batches). Nothing is awaited by time: to show that something did *not* arrive, a later
event is made to happen and must be the very next one received.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from support import (
    EVENT_TIMEOUT,
    ROOT,
    Event,
    JsonClient,
    ServerProcess,
    ack,
    child_env,
    open_json,
    open_plain,
    presence,
    stamped,
)

#: The server's one-line start-up failure for an unusable database.
DB_FAILURE = "cannot use the history database"
#: How long a whole multi-threaded scenario may take before the test fails.
SCENARIO_TIMEOUT = 60.0

# --- helpers -------------------------------------------------------------------------------


def message(message_id: int, room: str, sender: str | None, text: str) -> Event:
    """A live room ``message`` event as compared after :func:`stamped`."""
    return {"type": "message", "id": message_id, "room": room, "from": sender, "text": text}


def history(event: Event) -> Event:
    """The replayed form of a live ``message`` or ``private`` event (``ts`` included)."""
    return {**event, "history": True}


def say(client: JsonClient, nick: str | None, text: str, room: str = "lobby") -> Event:
    """``client`` (called ``nick``) says ``text`` in ``room``: check the ack, then its own
    copy; return that copy (with its ``ts``)."""
    answer = client.call({"type": "message", "text": text, "room": room})
    assert isinstance(answer.get("id"), int), answer
    assert answer == ack("message", id=answer["id"], room=room)
    event = client.event()
    assert stamped(event) == message(answer["id"], room, nick, text)
    return event


def whisper(client: JsonClient, nick: str, to: str, text: str) -> Event:
    """``client`` (called ``nick``) sends ``text`` privately to ``to``: check the ack, then
    its own copy; return that copy (with its ``ts``)."""
    answer = client.call({"type": "private", "to": to, "text": text})
    assert isinstance(answer.get("id"), int), answer
    assert answer == ack("private", id=answer["id"], to=to)
    event = client.event()
    private = {"type": "private", "id": answer["id"], "from": nick, "to": to, "text": text}
    assert stamped(event) == private
    return event


def terminate(server: ServerProcess) -> None:
    """Stop ``server`` with SIGTERM; it must exit 0 (its database closed cleanly)."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0, server.output


def start_failing_server(db: str) -> list[str]:
    """Run a server on ``db`` that must refuse to start: exit status 2, no traceback.
    Returns every line it printed (stdout and stderr)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_chat.server",
            *("--host", "127.0.0.1", "--port", "0"),
            "--db",
            db,
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=EVENT_TIMEOUT,
        env=child_env(),
        cwd=ROOT,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    return output.splitlines()


def wait_until(
    condition: threading.Condition, ready: Callable[[], bool], workers: list[Future[Any]]
) -> None:
    """Block until ``ready()`` (checked under ``condition``, which is notified on every
    change), or fail: after the event time limit, or with a worker's own exception if one
    finished first."""
    with condition:
        done = condition.wait_for(
            lambda: ready() or any(w.done() for w in workers), timeout=EVENT_TIMEOUT
        )
    for worker in workers:
        if worker.done():
            worker.result()  # a worker that failed raises here
    assert done, "timed out waiting for the workers"


# --- history on connect and on join ----------------------------------------------------------


def test_history_survives_a_restart_and_is_replayed_on_connect(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """Stored messages outlive a restart: a new client gets them first, as history."""
    db = str(tmp_path / "h.db")
    server = server_process(db=db, history_on_join=None)
    originals: list[Event] = []
    with open_json(server) as watcher, open_plain(server) as alice:
        alice.ask("/nick alice", "* You are now known as alice")
        assert stamped(watcher.event()) == presence("join", "alice", room="lobby")
        for text in ("one", "two", "three"):
            alice.ask(text, f"You said: {text}")
            event = watcher.event()
            assert stamped(event) == message(event["id"], "lobby", "alice", text)
            originals.append(event)
    ids = [event["id"] for event in originals]
    assert ids == sorted(set(ids))
    terminate(server)

    server = server_process(db=db, history_on_join=None)
    with open_plain(server) as plain:
        plain.expect(
            "[history] alice says: one",
            "[history] alice says: two",
            "[history] alice says: three",
        )
        with open_json(server) as client:
            for original in originals:
                assert client.event() == history(original)
            answer = client.call({"type": "message", "text": "four", "cid": "f"})
            assert answer == ack("message", "f", id=answer["id"], room="lobby")
            assert answer["id"] > ids[-1]  # ids keep increasing across the restart
            assert stamped(client.event()) == message(answer["id"], "lobby", None, "four")
            plain.expect("Someone says: four")  # live, and nothing before it


def test_history_on_join_flag_reaches_the_server(server_process: type[ServerProcess]) -> None:
    """--history-on-join 2 replays the last 2 messages on connect. (What the setting does on
    connect and on /join, 0 included, is in tests/server/test_history_protocol.py.)"""
    server = server_process(history_on_join=2)
    with open_plain(server) as alice:
        alice.ask("/nick alice", "* You are now known as alice")
        for n in range(1, 6):
            alice.ask(f"m{n}", f"You said: m{n}")
        with open_plain(server) as newcomer:
            newcomer.expect("[history] alice says: m4", "[history] alice says: m5")
            newcomer.ask("hi", "You said: hi")  # nothing else came before it
            alice.expect("Someone says: hi")


def test_history_limit_keeps_the_last_messages_of_each_room(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """--history-limit 3 keeps a room's last 3 (and 3 private ones), across a restart; a
    room with 3 keeps all of them, however old."""
    db = str(tmp_path / "limit.db")
    server = server_process("--history-limit", "3", db=db, history_on_join=0)
    with (
        open_json(server, "/?nick=bob", nick="bob") as bob,
        open_json(server, "/?nick=alice", nick="alice") as alice,
    ):
        assert alice.call({"type": "join", "room": "dev"}) == ack(
            "join", room="dev", topic=None, members=["alice"], anonymous=0
        )
        dev = [say(alice, "alice", f"d{n}", "dev") for n in range(1, 4)]
        lobby = [say(alice, "alice", f"l{n}", "lobby") for n in range(1, 6)]
        private = [whisper(alice, "alice", "bob", f"p{n}") for n in range(1, 5)]
        assert alice.call({"type": "history", "room": "lobby", "limit": 500, "cid": 1}) == ack(
            "history", 1, room="lobby", messages=[history(e) for e in lobby[2:]]
        )
        assert alice.call({"type": "history", "room": "dev", "limit": 500, "cid": 2}) == ack(
            "history", 2, room="dev", messages=[history(e) for e in dev]
        )
        assert alice.call({"type": "history", "private": True, "limit": 500, "cid": 5}) == ack(
            "history", 5, private=True, messages=[history(e) for e in private[1:]]
        )
        assert stamped(bob.event()) == presence("join", "alice", room="lobby")
    terminate(server)

    server = server_process("--history-limit", "3", db=db, history_on_join=None)
    with open_plain(server) as plain:
        plain.expect(
            "[history] alice says: l3",
            "[history] alice says: l4",
            "[history] alice says: l5",
        )
    query = "/?nick=alice&room=lobby,dev&since=0"
    with open_json(server, query, nick="alice", rooms=("lobby", "dev")) as alice:
        # l1 and l2 are gone: complete only from the id after l2. (A restart ends guest
        # sessions: this alice is a new guest, so neither the private messages that were
        # kept nor p1, which was not, count.)
        oldest = lobby[1]["id"] + 1
        assert alice.event() == ack("resume", since=0, recovered=False, oldest=oldest)
        for event in [*dev, *lobby[2:]]:
            assert alice.event() == history(event)
        lobby.append(say(alice, "alice", "l6", "lobby"))  # the limit holds after a restart
        assert alice.call({"type": "history", "room": "lobby", "limit": 500, "cid": 3}) == ack(
            "history", 3, room="lobby", messages=[history(e) for e in lobby[3:]]
        )
        assert alice.call({"type": "history", "room": "dev", "limit": 500, "cid": 4}) == ack(
            "history", 4, room="dev", messages=[history(e) for e in dev]
        )


# --- resends -------------------------------------------------------------------------------


def test_resent_cid_is_acked_as_a_duplicate_and_not_delivered(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """The same principal resending a cid gets the first id back with duplicate: true and
    nothing is delivered; anyone else's same cid is a new message (a cid cannot be used
    to suppress someone's messages), and so is a guest's after a restart, which ends
    guest sessions."""
    db = str(tmp_path / "resend.db")
    server = server_process(db=db)
    once = {"type": "message", "text": "once", "cid": "k1"}
    with open_json(server) as watcher, open_json(server, "/?nick=alice", nick="alice") as alice:
        assert stamped(watcher.event()) == presence("join", "alice", room="lobby")
        answer = alice.call(once)
        first = answer.get("id")
        assert answer == ack("message", "k1", id=first, room="lobby")
        assert isinstance(first, int)
        said = alice.event()
        assert stamped(said) == message(first, "lobby", "alice", "once")
        assert watcher.event() == said
        duplicate = ack("message", "k1", id=first, room="lobby", duplicate=True)
        assert alice.call(once) == duplicate
        answer = alice.call({"type": "message", "text": "after", "cid": "k2"})
        after = answer.get("id")
        assert answer == ack("message", "k2", id=after, room="lobby")
        assert isinstance(after, int)
        assert after > first
        said = alice.event()  # not a second "once"
        assert stamped(said) == message(after, "lobby", "alice", "after")
        assert watcher.event() == said
        with open_json(server) as other:
            answer = other.call(once)
            new = answer.get("id")
            assert answer == ack("message", "k1", id=new, room="lobby")
            assert isinstance(new, int)
            assert new > after
            said = other.event()
            assert stamped(said) == message(new, "lobby", None, "once")
            for client in (watcher, alice):
                assert client.event() == said
    terminate(server)

    server = server_process(db=db)
    with open_json(server, "/?nick=alice", nick="alice") as alice:
        answer = alice.call(once)
        assert answer == ack("message", "k1", id=answer.get("id"), room="lobby")
        assert answer["id"] > new


# --- unusable databases --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["under-a-file", "not-a-database"])
def test_unusable_database_stops_the_server_at_start(tmp_path: Path, kind: str) -> None:
    """A database path under a regular file, or a file that is not a database: exit 2 with
    one line and no traceback."""
    if kind == "under-a-file":
        (tmp_path / "plain-file").write_text("not a directory\n")
        db = tmp_path / "plain-file" / "h.db"
    else:
        db = tmp_path / "garbage.db"
        db.write_bytes(bytes(range(256)) * 16)
    lines = start_failing_server(str(db))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{DB_FAILURE} {db}: "), lines
    if kind == "not-a-database":
        assert lines == [f"{DB_FAILURE} {db}: it is not an SQLite database (left as it is)"]


def test_database_in_use_stops_a_second_server(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """A second server on a database in use exits 2, saying so; the first keeps serving."""
    db = tmp_path / "shared.db"
    first = server_process(db=str(db))
    with open_json(first) as client:
        assert start_failing_server(str(db)) == [
            f"{DB_FAILURE} {db}: another server is using it (database is locked); "
            "give this server its own file with --db PATH, or --db :memory:"
        ]
        assert say(client, None, "still here")["text"] == "still here"
        with open_json(first) as newcomer:
            assert say(newcomer, None, "me too")["text"] == "me too"
    terminate(first)


# --- kill -9 -------------------------------------------------------------------------------


@pytest.mark.timeout(SCENARIO_TIMEOUT)
def test_acknowledged_messages_survive_kill_9(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """After SIGKILL mid-stream and a restart, clients that resume with since= and resend
    what was not acked end up with every acked message, in id order, each stored under
    its acked id. A restart ends guest sessions, so a resend after it is a new message:
    one that was in flight at the kill (committed, its ack cut off) may be stored twice,
    at most one per client."""
    db = str(tmp_path / "kill.db")
    server = server_process(db=db, history_on_join=None)
    nicks = ("a", "b", "c")
    count = 30
    kill_after = 30  # acks, all clients together, before the kill
    changed = threading.Condition()
    progress = {"connected": 0, "acked": 0, "killed": 0}
    restarted = threading.Event()
    new_server: list[ServerProcess] = []
    everything = {(nick, f"{nick} {n}") for nick in nicks for n in range(count)}

    def run_client(nick: str) -> tuple[dict[int, int], dict[int, int], list[Event]]:
        """Send ``count`` messages (each acked before the next) across the kill; return
        the acks before the kill, all acks (index -> id), and every message received."""
        acks: dict[int, int] = {}
        received: list[Event] = []

        def record(event: Event) -> None:
            assert event.get("type") in ("message", "presence"), event
            if event["type"] == "message":
                received.append(event)

        def advance(key: str) -> None:
            with changed:
                progress[key] += 1
                if (
                    not progress["killed"]
                    and progress["connected"] == len(nicks)
                    and progress["acked"] >= kill_after
                ):
                    # Killed at once from here, the moment an ack arrives: an ack sent
                    # before its commit had finished would be caught out.
                    server.proc.kill()
                    progress["killed"] = 1
                changed.notify_all()

        def send(client: JsonClient, n: int) -> None:
            """Send message ``n`` and wait for its ack."""
            cid = f"{nick}-{n}"
            client.send({"type": "message", "text": f"{nick} {n}", "cid": cid})
            answer = client.event()
            while answer.get("type") != "ack":
                record(answer)
                answer = client.event()
            message_id = answer.get("id")
            assert answer == ack("message", cid, id=message_id, room="lobby")
            assert isinstance(message_id, int)
            acks[n] = message_id
            advance("acked")

        try:
            with open_json(server, f"/?nick={nick}", nick=nick) as first:
                advance("connected")
                for n in range(count):
                    send(first, n)
                while True:  # all acked already: read on until the kill
                    record(first.event())
        except ConnectionClosed:
            pass  # the kill
        before_kill = dict(acks)

        assert restarted.wait(EVENT_TIMEOUT)
        last_seen = max((event["id"] for event in received), default=0)
        query = f"/?nick={nick}&room=lobby&since={last_seen}"
        with open_json(new_server[0], query, nick=nick) as second:
            assert second.event() == ack("resume", since=last_seen, recovered=True)
            for n in [n for n in range(count) if n not in acks]:
                send(second, n)
            try:
                while not everything <= {(e["from"], e["text"]) for e in received}:
                    record(second.event())
            except TimeoutError:
                pass  # the final checks say what is missing
            else:
                extra, _ = second.events_until_ack("end")
                for event in extra:
                    record(event)
        return before_kill, acks, received

    with ThreadPoolExecutor(len(nicks)) as pool:
        workers = [pool.submit(run_client, nick) for nick in nicks]
        try:
            wait_until(changed, lambda: progress["killed"] == 1, workers)
        finally:
            server.proc.kill()  # (again: harmless) whatever happened
        assert server.wait() == -signal.SIGKILL
        new_server.append(server_process(db=db, history_on_join=None))
        restarted.set()
        results = {
            nick: worker.result(timeout=SCENARIO_TIMEOUT)
            for nick, worker in zip(nicks, workers, strict=True)
        }

    # Every message was acked, each with its own id.
    acked = {
        message_id: (nick, f"{nick} {n}")
        for nick, (_, acks, _) in results.items()
        for n, message_id in acks.items()
    }
    assert len(acked) == len(nicks) * count
    assert set(acked.values()) == everything
    acked_before = sum(len(before) for before, _, _ in results.values())
    assert kill_after <= acked_before < len(nicks) * count, "the kill did not come mid-stream"
    # The restarted server stores what was acknowledged, under the acked ids; anything
    # else it stores was in flight at the kill, at most one message per client.
    with open_json(new_server[0]) as reader:
        for _ in range(50):  # the lobby's history on join (default 50)
            assert reader.event().get("history") is True
        page = reader.call({"type": "history", "limit": 500, "cid": "all"})
    stored = {m["id"]: (m["from"], m["text"]) for m in page["messages"]}
    assert {i: stored.get(i) for i in acked} == acked
    in_flight = [stored[i] for i in stored if i not in acked]
    assert len({sender for sender, _ in in_flight}) == len(in_flight), in_flight
    assert set(in_flight) <= everything
    for nick, (_, _, received) in results.items():
        ids = [event["id"] for event in received]
        assert ids == sorted(stored), nick  # every stored message, exactly once, in id order
        for event in received:
            assert (event["from"], event["text"]) == stored[event["id"]], event
