#!/bin/sh
# The example shop: one image, three roles (web, api, kv), each served by busybox httpd.
# Usage: shop ROLE [--listen ADDRESS:PORT] [other flags are accepted and ignored]
role="$1"
shift
port=8080
while [ $# -gt 0 ]; do
    case "$1" in
        --listen) port="${2##*:}"; shift 2 ;;
        *) shift ;;
    esac
done
www=/tmp/www
mkdir -p "$www"
case "$role" in
    web)
        printf '<h1>%s</h1>\n' "${GREETING:-berth shop}" > "$www/index.html"
        if [ -f /etc/shop/motd.txt ]; then cat /etc/shop/motd.txt >> "$www/index.html"; fi
        ;;
    api)
        printf '{"items": [], "pageSize": %s}\n' "${CATALOG_PAGE_SIZE:-20}" > "$www/items"
        echo ok > "$www/ready"
        ;;
    kv)
        echo ok > "$www/ready"
        ;;
    *)
        echo "shop: unknown role '$role'; use web, api or kv" >&2
        exit 2
        ;;
esac
echo ok > "$www/healthz"
echo "shop: $role listening on port $port"
exec httpd -f -p "$port" -h "$www"
