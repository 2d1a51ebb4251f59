#!/usr/bin/env bash
# Install what the tests need on a fresh machine (Dovecot IMAP and POP3, memcached, nginx,
# curl, python3 and its Prometheus client, openssl, chromium),
# then run every test of the workspace. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd dovecot-pop3d)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/memcached ] || need+=(memcached)
# nginx stands in for two mailbox servers' web ports in the HTTP proxy tests
[ -x /usr/sbin/nginx ] || need+=(nginx)
# headless Chromium renders loadtest's HTML reports in a test
[ -x /usr/bin/chromium ] || need+=(chromium)
# Debian's python3 with its Prometheus client: the metrics test parses /metrics with it
/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1 || need+=(python3-prometheus-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # the packages' own services are not wanted: the tests start Dovecot and memcached themselves
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# the Debian packages may start system-wide daemons; they do not clash with the tests
# (which use their own config directories and free ports), so they are left alone.

status=0
cargo test --workspace --all-targets --release --no-fail-fast "$@" || status=$?
# the Debian package (cargo-deb, installed if missing): contents, scripts, unit verified
scripts/package-test.sh || status=1
# a bounded fuzzing run (about 2 minutes) over every parser and state machine
scripts/fuzz.sh 18 || status=1
exit $status
