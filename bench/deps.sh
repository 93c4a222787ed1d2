#!/bin/sh
# bench/deps.sh: what `make bench` needs besides spark's own packages
# (scripts/deps.sh): an nginx from Debian, valgrind (callgrind), the curl
# command and python3. As root it installs the missing ones; otherwise it
# names the command to run.
set -eu
missing=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have nginx || missing="$missing nginx-light"
have valgrind || missing="$missing valgrind"
have callgrind_annotate || case "$missing" in *valgrind*) ;; *) missing="$missing valgrind" ;; esac
have curl || missing="$missing curl"
have python3 || missing="$missing python3"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: missing Debian packages:$missing" >&2
  echo "bench: run as root: apt-get install -y$missing" >&2
  exit 1
fi
echo "bench: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
