"""Principals in the chat, with no sockets: who a member acts as, nicks held by
principals (several devices sharing one), logins of guests, reserved names, room limits.

Each test drives :class:`Chat` directly and reads what every member's subscription
received, as the chat's own tests do.
"""

from __future__ import annotations

import json

import pytest
from chat_harness import Harness

from trio_chat.core.arrival import Arrival
from trio_chat.core.commands import CommandError
from trio_chat.core.identity import Principal, PrincipalKind

pytest_plugins = ["chat_harness"]


ALICE = Principal.account(7, "alice")


async def test_a_plain_member_has_no_principal_until_asked(room: Harness) -> None:
    """An idle plain connection keeps no principal; asked for, it is a new guest, the same
    one each time after that, unlike any other member's."""
    one, two = await room.connect("one"), await room.connect("two")
    await room.say(one, "hello")
    assert one.member.known_principal is None
    assert two.member.known_principal is None
    first = one.member.principal
    assert first.kind is PrincipalKind.GUEST
    assert first.id.startswith("guest:")
    assert one.member.principal is first
    assert two.member.principal.id != first.id


async def test_a_principal_arrives_with_its_own_nick(room: Harness) -> None:
    """An account arrives named after itself, whatever nick its URL asked for."""
    watcher = await room.connect("watcher", json_mode=True)
    await watcher.received()
    alice = await room.connect(
        json_mode=True, principal=ALICE, arrival=Arrival(nick="other", rooms=("dev", "lobby"))
    )
    assert alice.member.known_principal is ALICE
    [welcome_line] = await alice.received()
    assert json.loads(welcome_line)["nick"] == "alice"
    assert json.loads(welcome_line)["rooms"] == ["dev", "lobby"]
    assert [json.loads(line) for line in await watcher.received()] == [
        {
            "type": "presence",
            "event": "join",
            "nick": "alice",
            "room": "lobby",
            "ts": "2026-01-02T03:04:05.000Z",
        }
    ]


async def test_devices_of_one_principal_share_its_nick_and_presence(room: Harness) -> None:
    """A second device arrives with the principal's nick; joins and leaves are announced
    once per principal; the roster lists the nick once; the last device's end is the quit."""
    bob = await room.connect("bob")
    await bob.received()
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE, arrival=Arrival(nick="whatever"))
    assert laptop.member.nick == "alice"
    assert await bob.received() == ["* alice joined lobby"]
    await room.say(laptop, "/join dev")
    await room.say(phone, "/join dev")
    await room.say(bob, "/join dev")
    await room.say(bob, "/who")
    assert await bob.received() == [
        "* You joined dev (2 here)",  # people, not connections
        "* In dev: alice and bob",
    ]
    await room.say(phone, "/leave dev")
    assert await bob.received() == []
    await room.say(laptop, "/leave dev")
    assert await bob.received() == ["* alice left dev"]
    room.disconnect(phone)
    assert await bob.received() == []
    room.disconnect(laptop)
    assert await bob.received() == ["* alice quit"]


async def test_a_device_leaving_a_room_only_it_is_in_is_a_leave(room: Harness) -> None:
    """A device that ends while another stays: rooms only it was in hear a leave, no quit."""
    bob = await room.connect("bob")
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE)
    await room.say(phone, "/join dev")
    await room.say(bob, "/join dev")
    await bob.received()
    room.disconnect(phone)
    assert await bob.received() == ["* alice left dev"]
    await room.say(bob, "/who lobby")
    assert await bob.received() == ["* In lobby: alice and bob"]
    assert laptop.member.nick == "alice"


async def test_a_nick_change_renames_every_device(room: Harness) -> None:
    """/nick from one device renames the principal on all of them; the others are told,
    and the old nick is free."""
    bob = await room.connect("bob")
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE)
    for client in (bob, phone, laptop):
        await client.received()
    await room.say(phone, "/nick ally")
    assert phone.member.nick == laptop.member.nick == "ally"
    assert await phone.received() == ["* You are now known as ally"]
    assert await laptop.received() == ["* alice is now known as ally"]
    assert await bob.received() == ["* alice is now known as ally"]
    carol = await room.connect("alice")
    assert await carol.received() == ["* You are now known as alice"]
    assert await bob.received() == ["* alice joined lobby"]
    await room.say(bob, "/nick ally")
    assert await bob.received() == ["Error: nick ally is taken"]


async def test_a_nick_held_by_a_principal_is_refused_to_others(room: Harness) -> None:
    """While any device holds it, the nick is the principal's: another member is refused,
    and so is the same nick in another case; the nick is free once the last one ends."""
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE)
    other = await room.connect()
    room.disconnect(phone)
    await room.say(other, "/nick ALICE")
    assert await other.received() == ["Error: nick ALICE is taken"]
    room.disconnect(laptop)
    await room.say(other, "/nick ALICE")
    assert await other.received() == ["* alice quit", "* You are now known as ALICE"]


async def test_authenticate_turns_a_guest_into_the_account(room: Harness) -> None:
    """A guest that logs in takes the account's nick (a nick change to its rooms, a join
    if it was anonymous) and shares it with the account's other devices."""
    bob = await room.connect("bob")
    guest = await room.connect("guest1")
    anonymous = await room.connect()
    await bob.received()
    room.chat.authenticate(guest.member, ALICE)
    assert guest.member.nick == "alice"
    assert guest.member.known_principal is ALICE
    assert await bob.received() == ["* guest1 is now known as alice"]
    room.chat.authenticate(anonymous.member, ALICE)
    assert anonymous.member.nick == "alice"
    assert await bob.received() == []  # alice is in the lobby already
    other = await room.connect("guest1")  # the guest's nick is free again
    assert await other.received() == ["* You are now known as guest1"]
    # Told nothing by the chat: answering the login is the caller's.
    assert await guest.received() == ["* You are now known as guest1", "* guest1 joined lobby"]


async def test_authenticate_announces_an_anonymous_member_as_a_join(room: Harness) -> None:
    bob = await room.connect("bob")
    await bob.received()
    anonymous = await room.connect()
    room.chat.authenticate(anonymous.member, ALICE)
    assert await bob.received() == ["* alice joined lobby"]


async def test_authenticate_is_refused_when_another_principal_has_the_nick(
    room: Harness,
) -> None:
    """A login whose nick a guest holds is refused (nick_taken) and changes nothing."""
    squatter = await room.connect("alice")
    guest = await room.connect("guest1")
    with pytest.raises(CommandError) as refused:
        room.chat.authenticate(guest.member, ALICE)
    assert (refused.value.code, refused.value.text) == ("nick_taken", "nick alice is taken")
    assert guest.member.nick == "guest1"
    assert guest.member.known_principal is None
    assert squatter.member.nick == "alice"


async def test_reserved_names_belong_to_their_principal_alone(room: Harness) -> None:
    """A registered name is refused to guests (by /nick and in the URL) and to other
    accounts; its own account takes it."""
    room.chat.reserved_names["alice"] = ALICE.id
    guest = await room.connect()
    await room.say(guest, "/nick Alice")
    assert await guest.received() == ["Error: nick Alice is taken"]
    by_url = await room.connect(json_mode=True, arrival=Arrival(nick="alice"))
    lines = [json.loads(line) for line in await by_url.received()]
    assert lines[0]["type"] == "welcome"
    assert lines[0]["nick"] is None
    assert lines[1] == {"type": "error", "code": "nick_taken", "text": "nick alice is taken"}
    mallory = await room.connect(principal=Principal.account(8, "mallory"))
    await room.say(mallory, "/nick alice")
    assert await mallory.received() == ["Error: nick alice is taken"]
    alice = await room.connect(principal=ALICE)
    assert alice.member.nick == "alice"


async def test_a_principal_limited_to_rooms_stays_in_them(room: Harness) -> None:
    """A token's rooms: it starts in the first it may be in (not the lobby), the rooms its
    URL names outside them are refused after the welcome, and so is a /join."""
    token = Principal.token("u-1", nick="tess", rooms=frozenset({"support", "dev"}))
    tess = await room.connect(json_mode=True, principal=token)
    assert tess.member.rooms == ["dev"]
    other = await room.connect(
        json_mode=True, principal=token, arrival=Arrival(rooms=("lobby", "support"))
    )
    assert other.member.rooms == ["support"]
    lines = [json.loads(line) for line in await other.received()]
    assert lines[1] == {
        "type": "error",
        "code": "room_not_allowed",
        "text": "you may not join lobby",
    }
    await room.say(tess, json.dumps({"type": "join", "room": "lobby", "cid": 1}))
    assert json.loads((await tess.received())[-1]) == {
        "type": "error",
        "cid": 1,
        "code": "room_not_allowed",
        "text": "you may not join lobby",
    }


async def test_kicking_a_principal_closes_every_device(room: Harness) -> None:
    """The operator's /kick names a nick: every device of its principal is closed, and
    the kick is announced once."""
    bob = await room.connect("bob")
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE)
    await bob.received()
    assert room.chat.kick("alice", "spam")
    assert await bob.received() == ["* alice was kicked (spam)"]
    assert phone.closes == laptop.closes == [(1008, "spam", False)]
    newcomer = await room.connect("alice")
    assert await newcomer.received() == ["* You are now known as alice"]


async def test_private_messages_reach_every_device_of_both_principals(room: Harness) -> None:
    """A private message goes to every device of its recipient and of its sender (the
    sending device reads it in the first person), and is stored for both principals."""
    bob = await room.connect("bob")
    phone = await room.connect(principal=ALICE)
    laptop = await room.connect(principal=ALICE)
    for client in (bob, phone, laptop):
        await client.received()
    await room.say(bob, "/msg alice hi")
    assert await phone.received() == ["[private] bob says: hi"]
    assert await laptop.received() == ["[private] bob says: hi"]
    await room.say(phone, "/msg bob hello")
    assert await phone.received() == ["[private] You said to bob: hello"]
    assert await laptop.received() == ["[private] alice says: hello"]
    assert await bob.received() == [
        "[private] You said to alice: hi",
        "[private] alice says: hello",
    ]
    stored = await room.chat.log.store.recent_private(ALICE.id, 10)
    bob_id = bob.member.principal.id
    assert [(r.text, r.sender_principal, r.recipient_principal) for r in stored] == [
        ("hi", bob_id, ALICE.id),
        ("hello", ALICE.id, bob_id),
    ]
