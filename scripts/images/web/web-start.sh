#!/bin/sh
# Entry point of dsm-test/web:*. Serves /www on port ${WEB_PORT:-80} with busybox httpd.
port=${WEB_PORT:-80}
if [ -f /etc/dsm-web-broken ]; then
    echo "web $(cat /etc/dsm-web-broken): starting (this release is broken)" >&2
    httpd -p "$port" -h /www        # daemonises
    sleep "${WEB_CRASH_AFTER:-2}"
    echo "web $(cat /etc/dsm-web-broken): fatal: simulated crash, exiting with status 1" >&2
    exit 1
fi
echo "web ${WEB_VERSION:-?}: listening on port $port" >&2
exec httpd -f -p "$port" -h /www
