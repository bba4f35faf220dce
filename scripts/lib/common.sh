# shellcheck shell=bash
# Shared helpers for scripts/provision.sh. Sourced, never executed.

log() { printf 'provision: %s\n' "$*" >&2; }
warn() { printf 'provision: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'provision: ERROR: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do printf 'provision:   %s\n' "$line" >&2; done
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

is_debian() {
    [ -r /etc/os-release ] || return 1
    # shellcheck disable=SC1091
    (. /etc/os-release && [ "${ID:-}" = debian ] || [[ " ${ID_LIKE:-} " == *" debian "* ]])
}

# wait_until SECONDS DESCRIPTION CMD... : poll CMD every 0.5 s until it succeeds.
wait_until() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "timed out after ${limit}s waiting for ${what}"
            return 1
        fi
        sleep 0.5
    done
}

# Every docker CLI call goes through dk so a hung engine cannot hang us forever.
dk() { timeout "${DSM_DOCKER_TIMEOUT:-300}" docker "$@"; }

docker_ok() { timeout 15 docker info >/dev/null 2>&1; }

# http_status URL [ACCEPT] -> prints the HTTP status code ("000" when unreachable).
http_status() {
    local url=$1 accept=${2:-}
    if [ -n "$accept" ]; then
        curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 5 -H "Accept: $accept" "$url" 2>/dev/null || true
    else
        curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 5 "$url" 2>/dev/null || true
    fi
}

# free_port [PREFERRED] -> prints PREFERRED if it can be bound on 127.0.0.1, else a kernel-chosen free port.
free_port() {
    python3 - "${1:-0}" <<'PY'
import socket, sys
pref = int(sys.argv[1])
for port in ([pref] if pref else []) + [0]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-stopped registry leaves TIME_WAIT
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    print(s.getsockname()[1])
    s.close()
    break
PY
}

# pid_alive PIDFILE [CMDLINE_SUBSTRING] -> true when the recorded process runs (and matches).
pid_alive() {
    local file=$1 want=${2:-} pid
    [ -r "$file" ] || return 1
    pid=$(cat "$file" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -d "/proc/$pid" ] || return 1
    if [ -n "$want" ]; then
        local cmdline
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
        [[ "$cmdline" == *"$want"* ]] || return 1
    fi
}

# sha256 of the given files/strings, stable: used as a recipe fingerprint label.
fingerprint() {
    local item
    for item in "$@"; do
        if [ -f "$item" ]; then
            printf '%s\n' "$(basename "$item")"
            sha256sum <"$item"
        else
            printf '%s\n' "$item"
        fi
    done | sha256sum | cut -c1-16
}
