# shellcheck shell=bash
# Shared by scripts/run, scripts/test and .ci/run: install what is missing, the same way.
#
#   say MESSAGE...          one line on stderr, tagged with $SCRIPT_TAG
#   die MESSAGE...          say it, exit 1
#   as_root COMMAND...      as root (sudo when not root)
#   apt_install PACKAGE...  apt-get install; `apt-get update` first only when needed
#   ensure_uv               uv on PATH, installed with pip (--user) when absent

say() { printf '[%s] %s\n' "${SCRIPT_TAG:-setup}" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (not root and no sudo)"
    fi
}

# apt_install PACKAGE... : apt-get install, running `apt-get update` first only when needed.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install $* with your package manager"
    local env=(env DEBIAN_FRONTEND=noninteractive)
    local updated=no package
    for package in "$@"; do
        if ! apt-cache show "$package" >/dev/null 2>&1; then
            say "apt-get update (package lists do not know '$package')"
            as_root "${env[@]}" apt-get update -q
            updated=yes
            break
        fi
    done
    say "apt-get install -y $*"
    if ! as_root "${env[@]}" apt-get install -y -q "$@"; then
        [[ $updated == yes ]] && die "apt-get install $* failed"
        say "install failed; apt-get update and retry"
        as_root "${env[@]}" apt-get update -q
        as_root "${env[@]}" apt-get install -y -q "$@"
    fi
}

ensure_uv() {
    command -v uv >/dev/null 2>&1 && return
    local python
    python=$(command -v python3 || true)
    if [[ -z $python ]] || ! "$python" -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
        python=$(command -v python3)
    fi
    say "installing uv with pip (--user)"
    local flags=(--user --quiet --no-warn-script-location) stdlib
    # Debian 12+ marks the system Python externally managed (PEP 668); a --user install of a
    # standalone tool is harmless there, but pip refuses it without --break-system-packages.
    stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    if [[ -f $stdlib/EXTERNALLY-MANAGED ]]; then
        flags+=(--break-system-packages)
    fi
    # Inside a virtualenv --user is refused: then a plain install (into that virtualenv).
    "$python" -m pip install "${flags[@]}" uv ||
        "$python" -m pip install --quiet uv ||
        die "could not install uv with pip"
    PATH="$("$python" -m site --user-base)/bin:$PATH"
    export PATH
    hash -r
    command -v uv >/dev/null 2>&1 || die "uv installed but not found on PATH"
}
