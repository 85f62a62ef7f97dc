#!/usr/bin/env bash
# Runs every Portico test on a fresh machine: installs what the tests need when it is
# missing, then the format check, clippy, the Rust tests (which run the real binaries) and
# the Python end-to-end suite with real clients. Stops whatever it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# --- What the tests need -------------------------------------------------------------------

# Debian packages, installed only when a command is missing.
apt_packages=()
command -v python3 >/dev/null || apt_packages+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
command -v promtool >/dev/null || apt_packages+=(prometheus)   # promtool checks /metrics
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || apt_packages+=(haproxy)   # a real PROXY v2 peer
command -v openssl >/dev/null || apt_packages+=(openssl)   # test certificates
command -v redis-server >/dev/null || apt_packages+=(redis-server)   # the shared async queue and cluster state
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || apt_packages+=(dnsmasq-base)   # DNS discovery of workers
# The console's browser test: Debian's Chromium driven by playwright-core (never a
# downloaded browser), with fonts for readable screenshots.
command -v chromium >/dev/null || apt_packages+=(chromium chromium-driver fonts-dejavu-core fonts-liberation)
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
if [ ${#apt_packages[@]} -gt 0 ]; then
    step "installing Debian packages: ${apt_packages[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        "${apt_packages[@]}"
fi

# The S3-compatible store for async results: s3s-fs serves a directory over the S3 API.
# The async tests start it (and redis-server) on free ports and stop it themselves.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if ! command -v s3s-fs >/dev/null; then
    step "installing s3s-fs (cargo install, a few minutes)"
    cargo install s3s-fs@0.14.1 --features binary --locked
fi
export PORTICO_S3S_FS
PORTICO_S3S_FS=$(command -v s3s-fs)

# Python packages in a venv under target/, reinstalled when tests/requirements.txt changes.
venv="$root/target/venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing Python test packages into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
fi

# playwright-core for the browser test, in target/ui-node (reinstalled when the lock changes).
ui_node="$root/target/ui-node"
ui_stamp="$ui_node/.lock.sha256"
ui_want=$(sha256sum tests/ui/package-lock.json | cut -d' ' -f1)
if [ ! -d "$ui_node/node_modules/playwright-core" ] || [ "$(cat "$ui_stamp" 2>/dev/null)" != "$ui_want" ]; then
    step "installing playwright-core into $ui_node"
    mkdir -p "$ui_node"
    cp tests/ui/package.json tests/ui/package-lock.json "$ui_node/"
    (cd "$ui_node" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$ui_want" >"$ui_stamp"
fi

# --- Checks and tests ----------------------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked

step "cargo test"
cargo test --workspace --locked

step "pytest (end-to-end with real clients)"
PORTICO_BIN_DIR="$root/target/debug" "$venv/bin/python" -m pytest -q tests/e2e

step "console in Chromium (screenshots in target/ui-shots/)"
PORTICO_BIN_DIR="$root/target/debug" PORTICO_UI_NODE="$ui_node" node --test tests/ui/console.test.mjs
