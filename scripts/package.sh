#!/usr/bin/env bash
# Builds the Debian packages dice-agent and dicectl with cargo-deb (the
# [package.metadata.deb] tables of agent/Cargo.toml and ctl/Cargo.toml, the
# maintainer scripts and the sample config in packaging/), and prints the
# path of each .deb on stdout.
#
#   scripts/package.sh [--profile PROFILE] [--no-build] [--fast] [--out DIR]
#
# --profile  the cargo profile whose binaries go in (default: release)
# --no-build package the binaries already built for that profile instead of
#            building them (the tests package their debug build this way)
# --fast     lighter compression: larger .deb files, made in a few seconds
# --out      where the .deb files go (default: target/debian)
#
# The man pages and shell completions are generated from the built binaries
# into target/PROFILE/package-assets/ before packaging.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/package.sh [--profile PROFILE] [--no-build] [--fast] [--out DIR]" >&2
    exit 2
}

profile=release
build=yes
out=target/debian
fast=()
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) [ $# -ge 2 ] || usage; profile="$2"; shift 2 ;;
    --no-build) build=no; shift ;;
    --fast) fast=(--fast); shift ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    -h | --help) usage ;;
    *) echo "package.sh: unknown argument $1" >&2; usage ;;
    esac
done

# shellcheck source=scripts/system-packages.sh
. scripts/system-packages.sh
need_cargo package.sh
# dpkg-shlibdeps (the packages' library dependencies) and strip.
need_packages package.sh dpkg-shlibdeps=dpkg-dev strip=binutils
need_cargo_deb package.sh

target="${CARGO_TARGET_DIR:-target}"
case "$profile" in
dev) bin_dir="$target/debug" ;;
*) bin_dir="$target/$profile" ;;
esac

if [ "$build" = yes ]; then
    cargo build --locked --profile "$profile" -p dice-agent -p dicectl --bins
fi
for bin in dice-agent dicectl; do
    [ -x "$bin_dir/$bin" ] || {
        echo "package.sh: $bin_dir/$bin is missing: build it (cargo build --profile $profile --bins) or drop --no-build" >&2
        exit 1
    }
done

# Man pages, completions and a Debian changelog, from the binaries that go in
# the packages. Man pages and changelogs are gzipped here: cargo-deb
# compresses only files from outside target/.
assets="$bin_dir/package-assets"
rm -rf "$assets"
mkdir -p "$assets/dice-agent" "$assets/dicectl/man"
"$bin_dir/dice-agent" --man >"$assets/dice-agent/dice-agent.1"
"$bin_dir/dice-agent" --completions bash >"$assets/dice-agent/dice-agent.bash"
"$bin_dir/dice-agent" --completions zsh >"$assets/dice-agent/_dice-agent"
"$bin_dir/dice-agent" --completions fish >"$assets/dice-agent/dice-agent.fish"
"$bin_dir/dicectl" man --out "$assets/dicectl/man" >/dev/null
"$bin_dir/dicectl" completions bash >"$assets/dicectl/dicectl.bash"
"$bin_dir/dicectl" completions zsh >"$assets/dicectl/_dicectl"
"$bin_dir/dicectl" completions fish >"$assets/dicectl/dicectl.fish"

# The workspace version, as cargo-deb reads it, and the Debian revision it adds.
version="$(cargo pkgid -p dice-agent)"
version="${version##*[#@]}-1"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
# The date of the commit packaged, so the same commit gives the same changelog.
date="$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")"
for package in dice-agent dicectl; do
    cat >"$assets/$package/changelog.Debian" <<CHANGELOG
$package ($version) unstable; urgency=medium

  * Built from the dice fleet workspace at commit $commit.

 -- dice fleet maintainers <dice-fleet@example.org>  $date
CHANGELOG
done
gzip -9n "$assets"/*/changelog.Debian "$assets/dice-agent/dice-agent.1" "$assets"/dicectl/man/*.1

mkdir -p "$out"
for package in dice-agent dicectl; do
    # cargo-deb prints the path of the .deb it wrote.
    cargo deb --locked --no-build --quiet -p "$package" --profile "$profile" \
        "${fast[@]}" --output "$out"
done
