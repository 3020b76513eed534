# Sourced by scripts/test and scripts/serve: make .venv and install the package into it
# (editable) with the extras named in $TRIO_CHAT_EXTRAS. Idempotent: it reinstalls only
# when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "trio_chat needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv" >&2
    "$python" -m venv .venv
fi
stamp=".venv/.trio_chat-installed-${TRIO_CHAT_EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing trio_chat${TRIO_CHAT_EXTRAS:+ with [$TRIO_CHAT_EXTRAS]} into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --editable ".${TRIO_CHAT_EXTRAS:+[$TRIO_CHAT_EXTRAS]}"
    touch "$stamp"
fi
