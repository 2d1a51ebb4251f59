#!/usr/bin/env bash
# Build the Debian package (cargo-deb; installed here if missing): the release binary, the
# systemd unit, the default /etc/ringmail/ringmail.toml (a conffile), the docs and the Grafana
# dashboard. Prints the .deb's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --quiet
fi
cargo build --release -p ringmail --quiet
cargo deb --no-build --quiet -p ringmail 2>&1 | tail -n 1
