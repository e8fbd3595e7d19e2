#!/bin/sh
# The example shop: one image, five roles: web, api and kv, each served by busybox httpd, and
# migrate and report, which run once and exit.
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
        # A small database: what it keeps is on its claim (/data), which outlives the pod.
        data="${KV_DATA:-/data}"
        mkdir -p "$data"
        echo "${POD_NAME:-kv} started at $(date -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo now)" >> "$data/starts"
        cp "$data/starts" "$www/starts"
        echo ok > "$www/ready"
        ;;
    migrate)
        # Run once before a release (a PreSync hook): brings the catalog to the schema it needs.
        echo "shop: catalog schema at version ${SCHEMA_VERSION:-1}"
        exit 0
        ;;
    report)
        # Run nightly (a CronJob): sums up the day.
        echo "shop: nightly report for $(date -u +%Y-%m-%d 2>/dev/null || echo today): 0 orders"
        exit 0
        ;;
    *)
        echo "shop: unknown role '$role'; use web, api, kv, migrate or report" >&2
        exit 2
        ;;
esac
echo ok > "$www/healthz"
echo "shop: $role listening on port $port"
exec httpd -f -p "$port" -h "$www"
