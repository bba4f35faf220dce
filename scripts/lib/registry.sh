# shellcheck shell=bash
# Local, auth-less image registry (Debian's docker-registry = distribution v2) on 127.0.0.1.

REG_DIR=${DSM_STATE_DIR}/registry
REG_DATA=$REG_DIR/data
REG_CONFIG=$REG_DIR/config.yml
REG_PIDFILE=$REG_DIR/registry.pid
REG_PORTFILE=$REG_DIR/port
REG_LOG=$REG_DIR/registry.log

registry_answers() {
    local port=$1 headers
    [[ "$port" =~ ^[0-9]+$ ]] || return 1
    headers=$(curl -fsS -D - -o /dev/null --connect-timeout 2 --max-time 5 "http://127.0.0.1:$port/v2/" 2>/dev/null) || return 1
    grep -qi '^docker-distribution-api-version: *registry/2' <<<"$headers"
}

recorded_registry_port() { cat "$REG_PORTFILE" 2>/dev/null || true; }

# check_registry: sets REGISTRY_PORT when the recorded registry answers.
check_registry() {
    REGISTRY_PORT=$(recorded_registry_port)
    registry_answers "$REGISTRY_PORT"
}

ensure_registry() {
    if check_registry; then
        log "registry answers on 127.0.0.1:$REGISTRY_PORT"
        return 0
    fi
    have docker-registry || die "docker-registry binary not found" "get it: apt-get install docker-registry"
    if pid_alive "$REG_PIDFILE" docker-registry; then
        local old
        old=$(cat "$REG_PIDFILE")
        warn "our registry (pid $old) runs but does not answer; stopping it"
        kill "$old" 2>/dev/null || true
        wait_until 10 "registry pid $old to exit" test ! -d "/proc/$old" || kill -9 "$old" 2>/dev/null || true
    fi
    local port
    port=$(free_port "$(recorded_registry_port)")
    [ -n "$port" ] || die "could not find a free TCP port on 127.0.0.1 for the registry"
    mkdir -p "$REG_DATA"
    cat >"$REG_CONFIG" <<YAML
# Written by scripts/provision.sh (docker-stack-mcp test registry). No auth, loopback only.
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: $REG_DATA
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    log "starting registry on 127.0.0.1:$port (storage $REG_DATA, log $REG_LOG)"
    printf '\n==== %s provision.sh: registry on port %s\n' "$(date -Is)" "$port" >>"$REG_LOG"
    # 9>&-: the daemon must not inherit (and hold forever) the provision.lock descriptor.
    setsid nohup docker-registry serve "$REG_CONFIG" >>"$REG_LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$REG_PIDFILE"
    echo "$port" >"$REG_PORTFILE"
    if ! wait_until 20 "registry on 127.0.0.1:$port" registry_answers "$port"; then
        tail -n 10 "$REG_LOG" | sed 's/^/provision:   registry: /' >&2 || true
        die "registry did not answer on 127.0.0.1:$port within 20 s" "log: $REG_LOG"
    fi
    REGISTRY_PORT=$port
}

MANIFEST_ACCEPT='application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json'

# registry_digest REPO TAG -> prints the manifest digest stored in the registry (empty if absent).
registry_digest() {
    curl -fsS -I --connect-timeout 2 --max-time 5 -H "Accept: $MANIFEST_ACCEPT" \
        "http://127.0.0.1:$REGISTRY_PORT/v2/$1/manifests/$2" 2>/dev/null \
        | tr -d '\r' | awk 'tolower($0) ~ /^docker-content-digest:/ {sub(/^[^:]*: */, ""); print}'
}

# registry_current IMAGE(repo:tag) -> true when the registry holds exactly the local image.
registry_current() {
    local repo=${1%:*} tag=${1##*:} digest
    digest=$(registry_digest "$repo" "$tag")
    [ -n "$digest" ] || return 1
    local digests
    digests=$(dk image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1" 2>/dev/null) || return 1
    grep -qxF "127.0.0.1:$REGISTRY_PORT/$repo@$digest" <<<"$digests"
}

ensure_pushed() {
    local image=$1 remote="127.0.0.1:$REGISTRY_PORT/$1"
    if registry_current "$image"; then
        log "registry already has $remote"
        return 0
    fi
    log "pushing $remote"
    dk tag "$image" "$remote"
    dk push --quiet "$remote" >/dev/null || die "docker push $remote failed" "registry log: $REG_LOG"
    registry_current "$image" || die "pushed $remote but the registry digest does not match the local image"
}
