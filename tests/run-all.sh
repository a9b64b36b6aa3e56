#!/usr/bin/env bash
# The README's test command: installs what the tests use on a fresh Debian machine, then runs
# every test, the Debian package (build + dpkg -i) and the short CI bench. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages the tests drive for real ---
# ffmpeg/ffprobe validate every file we write; GStreamer's RTSP server is the third-party
# camera (interop) and gst-launch the bench's second peer.
# prometheus (and promtool) scrape and lint /metrics; `mount` mounts the small tmpfs
# filesystems the full-disk and failing-disk tests record to.
# curl checks the API's generated certificate (tests/security.rs).
# VLC (cvlc, run as nobody) is the third-party HLS player of tests/playback.rs.
pkgs=(prometheus ffmpeg mount gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 chromium fonts-liberation libgl1-mesa-dri
      vlc-bin vlc-plugin-base lighttpd
      python3-venv iproute2 util-linux curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The WS-Discovery test (tests/import_discovery.rs) publishes a device with the PyPI
# `wsdiscovery` package, inside a network namespace (iproute2, util-linux's unshare).
if ! target/wsd-venv/bin/python -c "import wsdiscovery" 2>/dev/null; then
  echo "==> installing wsdiscovery 2.1.2 (PyPI) into target/wsd-venv"
  python3 -m venv target/wsd-venv
  target/wsd-venv/bin/pip install -q wsdiscovery==2.1.2
fi
export UNDERSTUDY_PYTHON="$PWD/target/wsd-venv/bin/python"

# --- tests ---
# Release build: the recording tests run real-time cameras, and the bench shares the build.
echo "==> cargo test (release)"
cargo test --workspace --release --no-fail-fast 2>&1

echo "==> Debian package: build, install, check"
bash tests/deb.sh

echo "==> every bench builds (they are not run here, but must not rot)"
cargo bench --workspace --no-run 2>&1

if [ -f benches/ingest.rs ]; then
  echo "==> short ingest bench: 100 channels x 10 s realtime, fails on any lost frame"
  cargo bench --bench ingest -- --channels 100 --seconds 10 --mode realtime --peer none --check
fi
