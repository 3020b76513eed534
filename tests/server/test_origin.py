"""The ``Origin`` rule (:mod:`trio_chat.server.net.origin`), pure: normalised origins, the
server's own origin from ``Host`` and the scheme or ``--public-origin``, and
``--allow-origin``."""

from __future__ import annotations

import pytest

from trio_chat.server.net.origin import (
    normalize_origin,
    origin_allowed,
    own_origin,
    parse_allowed_origin,
)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("http://chat.example", "http://chat.example"),
        ("HTTP://Chat.Example:80", "http://chat.example"),
        ("https://chat.example:443/", "https://chat.example"),
        ("https://chat.example:8443", "https://chat.example:8443"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
        ("http://[2001:DB8::1]", "http://[2001:db8::1]"),
        ("null", "null"),
        (" NULL ", "null"),
        ("file://", "file://"),
        ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ("http://chat.example/path", None),
        ("http://chat.example?q", None),
        ("http://user@chat.example", None),
        ("http://chat.example:99999", None),
        ("http://chat.example:port", None),
        ("http://", None),
        ("chat.example", None),
        ("http://a b", None),
        ("http://chat.example, http://evil.example", None),
        ("", None),
    ],
)
def test_origins_are_normalised(text: str, origin: str | None) -> None:
    assert normalize_origin(text) == origin


def test_an_allowed_origin_is_star_null_or_an_origin() -> None:
    assert parse_allowed_origin("*") == "*"
    assert parse_allowed_origin("null") == "null"
    assert parse_allowed_origin("HTTPS://App.Example:443") == "https://app.example"
    with pytest.raises(ValueError, match=r"'/x' is not an origin \(SCHEME://HOST\[:PORT\]"):
        parse_allowed_origin("/x")


def test_the_own_origin_is_the_host_with_the_clients_scheme() -> None:
    assert own_origin("127.0.0.1:8765", tls=False) == "http://127.0.0.1:8765"
    assert own_origin("Chat.Example:443", tls=True) == "https://chat.example"
    assert own_origin("chat.example", tls=True) == "https://chat.example"
    assert own_origin(None, tls=False) is None
    assert own_origin("", tls=False) is None


def allowed(
    origin: str | None,
    host: str | None = "chat.example:8765",
    *,
    tls: bool = False,
    public: str | None = None,
    allow: tuple[str, ...] = (),
) -> bool:
    return origin_allowed(origin, host=host, tls=tls, public_origin=public, allowed=allow)


def test_a_request_without_origin_passes() -> None:
    assert allowed(None)
    assert allowed(None, host=None)


def test_the_servers_own_origin_passes_and_others_do_not() -> None:
    assert allowed("http://chat.example:8765")
    assert allowed("http://CHAT.example:8765")
    assert not allowed("https://chat.example:8765")  # another scheme is another origin
    assert not allowed("http://chat.example:8766")
    assert not allowed("http://evil.example")
    assert not allowed("http://evil.example", host=None)
    assert allowed("https://chat.example", "chat.example", tls=True)


def test_null_file_and_malformed_origins_are_refused_by_default() -> None:
    assert not allowed("null")
    assert not allowed("null", host="null")
    assert not allowed("file://")
    assert not allowed("http://chat.example:8765/page")


def test_the_public_origin_replaces_the_host() -> None:
    public = "https://chat.example.org"
    assert allowed("https://chat.example.org", "127.0.0.1:8765", public=public)
    assert not allowed("http://127.0.0.1:8765", "127.0.0.1:8765", public=public)


def test_allowed_origins_and_star() -> None:
    allow = ("https://app.example", "null")
    assert allowed("https://APP.example:443", allow=allow)
    assert allowed("null", allow=allow)
    assert allowed("http://chat.example:8765", allow=allow)  # the own one still passes
    assert not allowed("https://other.example", allow=allow)
    assert not allowed("file://", allow=allow)
    for origin in ("http://evil.example", "null", "file://", "garbage"):
        assert allowed(origin, allow=("*",))
