#!/usr/bin/env bash
# The Debian package, built and installed for real (CI machine, as root): `cargo deb` →
# target/debian/understudy_VERSION_amd64.deb; `dpkg -i`; the packaged config passes
# `understudy check` as the service user; the unit passes `systemd-analyze verify`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb

echo "==> cargo deb"
rm -f target/debian/understudy_*.deb
cargo deb --strip
version=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="understudy"))')
deb="target/debian/understudy_${version}_amd64.deb"
test -f "$deb" || { echo "expected $deb"; ls target/debian; exit 1; }

echo "==> dpkg -i $deb"
$SUDO dpkg -i "$deb"
fail() { echo "deb: $*"; exit 1; }
getent passwd understudy >/dev/null || fail "no understudy user"
test "$(stat -c '%a %U:%G' /etc/understudy/understudy.toml)" = "640 root:understudy" \
    || fail "config is $(stat -c '%a %U:%G' /etc/understudy/understudy.toml), want 640 root:understudy"
test "$(stat -c '%U' /var/lib/understudy)" = "understudy" || fail "/var/lib/understudy not owned by understudy"
unit=$(dpkg -L understudy | grep '/systemd/system/understudy.service$') || fail "no unit in the package"
grep -q '^Type=notify' "$unit" && grep -q '^WatchdogSec=' "$unit" || fail "unit lacks Type=notify/WatchdogSec"
/usr/bin/understudy --version
# The service user can read its config and the example is valid.
$SUDO runuser -u understudy -- /usr/bin/understudy check --config /etc/understudy/understudy.toml

if command -v systemd-analyze >/dev/null; then
    echo "==> systemd-analyze verify $unit"
    # Offline verification works without a running systemd. It exits 0 on directives it
    # ignores (a typo'd Type=), so any output at all fails.
    out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -1 || true
else
    echo "==> systemd-analyze not available: unit not verified"
fi
echo "==> Debian package OK: $deb"
