# Sourced by test.sh and quickstart.sh: installs the Debian packages a script
# needs when their programs are missing.
#
#   need_cargo SCRIPT
#   need_packages SCRIPT CHECK=PACKAGE...
#
# need_cargo stops unless a Rust toolchain is on PATH (rustup installs it;
# Debian's packages are too old for this workspace).
#
# CHECK is a program looked up on PATH (and in /usr/sbin), or `py:MODULES`
# for Python modules python3 must import. Whatever is missing is installed
# with apt-get: directly as root, through `sudo -n` otherwise. When neither
# works (no apt-get, no password-less sudo), it stops with the exact command
# that installs them.

# has CHECK: whether what CHECK names is there.
has() {
    case "$1" in
    py:*)
        local modules="${1#py:}"
        command -v python3 >/dev/null 2>&1 && python3 -c "import ${modules//,/, }" >/dev/null 2>&1
        ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
    esac
}

need_packages() {
    local script="$1"
    shift
    local missing=() pair
    for pair in "$@"; do
        has "${pair%%=*}" || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local install="apt-get update && apt-get install -y ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "$script: missing ${missing[*]}; install them as root: sudo sh -c '$install'" >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$script: missing ${missing[*]} and there is no apt-get here: install the packages that provide them with this system's package manager" >&2
        exit 1
    fi
    echo "$script: installing ${missing[*]}" >&2
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "$script: could not install ${missing[*]}; run as root: $install" >&2
        exit 1
    fi
    for pair in "$@"; do
        has "${pair%%=*}" || {
            echo "$script: ${pair%%=*} is still missing after installing ${pair#*=}: install ${pair#*=} by hand" >&2
            exit 1
        }
    done
}

need_cargo() {
    command -v cargo >/dev/null 2>&1 || {
        echo "$1: cargo not found: install the Rust toolchain with rustup, then run this again" >&2
        exit 1
    }
}

# The cargo-deb that scripts/package.sh runs: a version known to build with
# this workspace's toolchain, installed with `cargo install` when `cargo deb`
# is missing.
CARGO_DEB_VERSION=3.8.0
need_cargo_deb() {
    cargo deb --version >/dev/null 2>&1 && return 0
    echo "$1: installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet || {
        echo "$1: could not install cargo-deb: run cargo install cargo-deb --version $CARGO_DEB_VERSION --locked" >&2
        exit 1
    }
}
