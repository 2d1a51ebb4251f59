#!/usr/bin/env bash
# Check the Debian package: build it (scripts/package.sh), then its contents, control data and
# maintainer scripts, that the packaged default configuration passes the packaged binary's
# --check-config, and `systemd-analyze verify` on the unit where systemd-analyze exists.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(scripts/package.sh | tail -n 1)
[ -f "$deb" ] || { echo "package-test: no package built ($deb)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package-test: $*"; exit 1; }

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$work/contents"
for path in /usr/bin/ringmail /usr/lib/systemd/system/ringmail.service \
            /etc/ringmail/ringmail.toml /usr/share/doc/ringmail/README.md \
            /usr/share/doc/ringmail/docs/configuration.md /usr/share/doc/ringmail/grafana-dashboard.json; do
  grep -qx "$path" "$work/contents" || fail "missing $path"
done
dpkg-deb -c "$deb" | grep ' ./usr/bin/ringmail$' | grep -q '^-rwxr-xr-x' || fail "ringmail not executable"

dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/ringmail/ringmail.toml "$work/control/conffiles" || fail "the config is not a conffile"
grep -q '^Depends:.*adduser' "$work/control/control" || fail "Depends lacks adduser"
grep -q '^Section: mail' "$work/control/control" || fail "Section is not mail"
for script in postinst prerm postrm; do
  [ -f "$work/control/$script" ] || fail "no $script"
  sh -n "$work/control/$script" || fail "$script does not parse"
done
grep -q 'adduser --system' "$work/control/postinst" || fail "postinst does not create the ringmail user"
grep -q 'deb-systemd-helper enable ringmail.service' "$work/control/postinst" || fail "postinst does not enable the unit"

dpkg-deb -x "$deb" "$work/root"
unit="$work/root/usr/lib/systemd/system/ringmail.service"
for line in 'User=ringmail' 'Restart=on-failure' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
            'ExecReload=/bin/kill -HUP $MAINPID' 'LimitNOFILE=1048576'; do
  grep -qxF "$line" "$unit" || fail "unit lacks $line"
done
# the default configuration is valid for the packaged binary
"$work/root/usr/bin/ringmail" --config "$work/root/etc/ringmail/ringmail.toml" --check-config \
  || fail "the default configuration does not pass --check-config"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify a copy whose commands point into the extracted tree (the binary is not installed)
  mkdir -p "$work/units"
  sed "s|/usr/bin/ringmail|$work/root/usr/bin/ringmail|g" "$unit" > "$work/units/ringmail.service"
  out=$(systemd-analyze verify "$work/units/ringmail.service" 2>&1) \
    || fail "systemd-analyze verify: $out"
  echo "$out" | grep -i 'ringmail' && fail "systemd-analyze verify warned: $out"
  echo "package-test: systemd-analyze verify passed"
else
  echo "package-test: systemd-analyze not available; unit not verified"
fi
echo "package-test: $deb OK"
