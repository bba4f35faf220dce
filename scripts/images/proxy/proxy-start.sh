#!/bin/bash
# Entry point of dsm-test/proxy:1: haproxy in the foreground (master-worker, PID 1 gets signals;
# SIGUSR1 = soft stop, finishing requests in flight). The config reads PROXY_* from the environment.
set -euo pipefail
export PROXY_BACKEND=${PROXY_BACKEND:-web:80} PROXY_SLOTS=${PROXY_SLOTS:-10} PROXY_PORT=${PROXY_PORT:-80} PROXY_CHECK_PATH=${PROXY_CHECK_PATH:-/}
cfg=${PROXY_CONFIG:-/usr/local/etc/haproxy/haproxy.cfg}
if [ "${1:-}" = --healthcheck ]; then
    exec 3<>/dev/tcp/127.0.0.1/8404
    printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3
    IFS= read -r -t 2 status <&3
    [[ "$status" == *" 200 "* ]]
    exit
fi
[ "$#" -eq 0 ] || exec "$@"
echo "proxy: haproxy $(haproxy -v | awk 'NR==1{print $3}') on :$PROXY_PORT -> $PROXY_BACKEND (resolver 127.0.0.11)" >&2
exec haproxy -W -db -f "$cfg"
