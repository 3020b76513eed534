"""The package's version, read from its installed metadata.

``pyproject.toml`` is the one place the version is written; everything else asks here.
Read lazily (``importlib.metadata`` loads ``email`` and ``socket``, which the sans-I/O
core must not import) and once.
"""

from __future__ import annotations

import functools

__all__ = ["server_name", "version"]

#: The distribution whose metadata holds the version.
DISTRIBUTION = "trio_chat"


@functools.cache
def version() -> str:
    """The installed package's version, e.g. ``1.2.3`` (``unknown`` when the package is
    run from a source tree that was never installed, so has no metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def server_name() -> str:
    """What the server calls itself in a ``welcome`` event: ``trio_chat/VERSION``."""
    return f"trio_chat/{version()}"
