#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks lint and types, runs every test.
# Run as root on Debian 12 (namespaces, taps and QEMU guests need it; CI runs it as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
.venv/bin/ruff check netbootd tests images bench
.venv/bin/mypy netbootd
exec .venv/bin/python -m pytest -q -p no:cacheprovider -rs --durations=15 tests "$@"
