#!/usr/bin/env bash
# Puts Debian's Prometheus 2.42 (`prometheus` and `promtool`) into the git-ignored .tools/prometheus/
# without installing the package: `apt-get download` + `dpkg-deb -x`, so no system user, init script or
# daemon is set up. The local stack runs `prometheus` with its own config and data dir; the tests run
# `promtool` on observability/alerts. Binaries: .tools/prometheus/usr/bin/{prometheus,promtool}.
#
# Idempotent: nothing is downloaded while the installed promtool reports version 2.42. Exits 1 with a
# message naming what is missing (a command, the package lists, root for `apt-get update`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.tools/prometheus"
PROMTOOL="$DEST/usr/bin/promtool"
PACKAGE=prometheus
# Debian 12's version; the rule files and the tests are written against it.
VERSION=2.42

fail() {
  echo "FAIL  prometheus: $*" >&2
  exit 1
}

# The version a promtool binary reports (`promtool, version 2.42.0+ds (...)` -> `2.42.0+ds`).
reported_version() {
  "$1" --version 2>/dev/null | awk 'NR == 1 {print $3}'
}

if [[ -x "$PROMTOOL" && "$(reported_version "$PROMTOOL")" == "$VERSION".* ]]; then
  echo "ok    prometheus + promtool $(reported_version "$PROMTOOL") (already installed in $DEST)"
  exit 0
fi

for needed in apt-get dpkg-deb awk; do
  command -v "$needed" >/dev/null || fail "'$needed' is not on PATH: this script needs Debian's apt and dpkg (Debian 12 ships Prometheus $VERSION)"
done

work="$(mktemp -d)"
trap 'rm -rf "$work" "$DEST.partial"' EXIT

# apt drops privileges to _apt for downloads, which cannot write into a root-owned temp dir.
apt_options=()
[[ $EUID -eq 0 ]] && apt_options=(-o APT::Sandbox::User=root)

download() {
  (cd "$work" && apt-get download "${apt_options[@]}" "$PACKAGE") >"$work/apt.log" 2>&1
}

echo "....  prometheus: apt-get download $PACKAGE"
if ! download; then
  # A machine whose package lists were never fetched (or were cleaned) knows no candidate version.
  if ! grep -qE "Unable to locate package|has no candidate|no installation candidate" "$work/apt.log"; then
    cat "$work/apt.log" >&2
    fail "apt-get download $PACKAGE failed (see above)"
  fi
  [[ $EUID -eq 0 ]] || fail "apt has no package lists for '$PACKAGE'; run \`sudo apt-get update\`, then this script again"
  echo "....  prometheus: no package lists yet; apt-get update"
  apt-get update -qq || fail "apt-get update failed"
  download || {
    cat "$work/apt.log" >&2
    fail "apt-get download $PACKAGE failed after apt-get update (see above)"
  }
fi

deb=("$work"/"$PACKAGE"_*.deb)
[[ -f "${deb[0]}" ]] || fail "apt-get download left no ${PACKAGE}_*.deb in $work"
offered="$(dpkg-deb --field "${deb[0]}" Version)"
[[ "$offered" == "$VERSION".* ]] || fail "apt offers $PACKAGE $offered, expected $VERSION.x (Debian 12)"

# Unpack beside the destination, then swap it in: an interrupted run never leaves a half tree in place.
rm -rf "$DEST.partial"
dpkg-deb -x "${deb[0]}" "$DEST.partial" || fail "dpkg-deb -x ${deb[0]} failed"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"

"$PROMTOOL" --version >/dev/null || fail "$PROMTOOL does not run"
"$DEST/usr/bin/prometheus" --version >/dev/null || fail "$DEST/usr/bin/prometheus does not run"
echo "ok    prometheus + promtool $(reported_version "$PROMTOOL") in $DEST/usr/bin"
