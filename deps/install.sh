#!/bin/sh
# Installs the Debian packages of the given purposes from deps/debian-packages
# that are not installed yet (apt-get update only when something is missing).
# Needs root for apt-get: run as root, or with sudo available.
#
#   deps/install.sh build test       # what those purposes need
#   deps/install.sh --list build     # print the packages, install nothing
#
# POSIX sh: it runs in a bare Debian root before bash is assumed anywhere.
set -eu

list=$(dirname "$0")/debian-packages
print_only=0
if [ "${1:-}" = "--list" ]; then
	print_only=1
	shift
fi
if [ $# -eq 0 ]; then
	echo "usage: deps/install.sh [--list] PURPOSE..." >&2
	exit 2
fi

# Every package whose purposes field names one of the arguments.
packages=$(awk -v want="$*" '
	BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) ok[w[i]] = 1 }
	/^[ \t]*(#|$)/ { next }
	{ m = split($2, p, ","); for (i = 1; i <= m; i++) if (p[i] in ok) { print $1; break } }
' "$list")
# A purpose nothing carries is a typo: fail rather than install nothing.
for purpose in "$@"; do
	awk -v p="$purpose" '!/^[ \t]*(#|$)/ && ("," $2 ",") ~ ("," p ",") { found = 1 }
		END { exit !found }' "$list" || {
		echo "deps/install.sh: no package has purpose '$purpose'" >&2
		exit 2
	}
done

if [ "$print_only" = 1 ]; then
	printf '%s\n' $packages
	exit 0
fi

missing=
for p in $packages; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' ||
		missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: the packages for '$*' are installed"
	exit 0
fi
echo "deps: installing$missing"
as_root=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || {
		echo "deps: not root and no sudo; as root run: apt-get install$missing" >&2
		exit 1
	}
	as_root=sudo
fi
# shellcheck disable=SC2086 # word splitting of the package names is wanted
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
# shellcheck disable=SC2086
$as_root env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends $missing </dev/null
