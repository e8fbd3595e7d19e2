#!/usr/bin/env bash
# Builds the images the example repository runs, on this machine, from Debian's busybox-static:
# nothing is pulled from a registry.
set -euo pipefail
cd "$(dirname "$0")"
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq busybox-static
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/app" "$root/etc"
chmod 1777 "$(mkdir -p "$root/tmp" && echo "$root/tmp")"
cp /bin/busybox "$root/bin/busybox"
for tool in sh httpd cat date echo mkdir printf sleep test true wget; do
    ln -s busybox "$root/bin/$tool"
done
install -m 0755 shop/shop.sh "$root/app/shop"
tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/app/shop"]' - berth-example/shop:0.1.0 >/dev/null
echo "built berth-example/shop:0.1.0"
