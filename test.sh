#!/usr/bin/env bash
# Runs every test of berth. Installs what the build needs when it is missing, so that it works
# on a fresh machine. With UPDATE_EXPECT=1, snapshot files are rewritten instead of compared.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for package in pkg-config libssl-dev git busybox-static chromium chromium-driver; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The benchmark is built, not run: it measures, it does not assert speed.
cargo build --benches --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --lib --bins --tests --no-fail-fast
else
    cargo test --lib --bins --tests --no-fail-fast
fi
