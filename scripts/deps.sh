#!/bin/sh
# Install the Debian packages spark needs to build, test and demo, if any is
# missing. As root it installs them; otherwise it names the command to run.
set -eu
PKGS="gcc make pkg-config lua5.4 liblua5.4-dev libcurl4-openssl-dev lua-cjson
lua-socket lua-argparse lua-system lua-busted lua-check luarocks lua-cqueues lua-luv
openssl $*"
missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "spark: missing Debian packages:$missing" >&2
  echo "spark: run as root: apt-get install -y$missing" >&2
  exit 1
fi
echo "spark: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
