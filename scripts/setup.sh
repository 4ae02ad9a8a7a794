#!/usr/bin/env bash
# Installs the Debian packages aurum needs to build and test, only those that
# are missing; `apt-get update` runs once, and only if something is missing.
# Idempotent and quiet when everything is present; any failure stops it.
#
#   scripts/setup.sh [--browser]
#
# --browser (or AURUM_SETUP_BROWSER=1) also installs chromium, for web UI
# screenshots.
set -euo pipefail

PACKAGES=(build-essential clang clang-tidy clang-format cppcheck bear libcmocka-dev
    libmicrohttpd-dev zlib1g-dev libsqlite3-dev sqlite3 libjansson-dev libedit-dev pkg-config)
BROWSER_PACKAGES=(chromium)

want_browser=${AURUM_SETUP_BROWSER:-0}
for arg in "$@"; do
    case $arg in
    --browser) want_browser=1 ;;
    *)
        echo "setup.sh: unknown argument: $arg" >&2
        exit 2
        ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "setup.sh: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# missing PKG...: prints the packages that are not installed.
missing() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            echo "$p"
        fi
    done
}

install_browser() {
    mapfile -t todo < <(missing "${BROWSER_PACKAGES[@]}")
    [ ${#todo[@]} -eq 0 ] && return 0
    install_pkgs "${todo[@]}"
}

updated=0
install_pkgs() {
    echo "setup.sh: installing: $*"
    if [ $updated -eq 0 ]; then
        as_root apt-get update -qq
        updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mapfile -t todo < <(missing "${PACKAGES[@]}")
if [ ${#todo[@]} -gt 0 ]; then
    install_pkgs "${todo[@]}"
fi
if [ "$want_browser" = 1 ]; then
    install_browser
fi

# Fail loudly if anything is still missing.
all=("${PACKAGES[@]}")
[ "$want_browser" = 1 ] && all+=("${BROWSER_PACKAGES[@]}")
mapfile -t still < <(missing "${all[@]}")
if [ ${#still[@]} -gt 0 ]; then
    echo "setup.sh: still missing after install: ${still[*]}" >&2
    exit 1
fi
