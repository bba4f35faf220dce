# shellcheck shell=bash
# Offline-built test images, all labelled dsm.test=1. Each image carries a recipe fingerprint
# label (dsm.test.recipe); an image that exists with the right fingerprint is never rebuilt.

IMAGES_DIR=$SCRIPT_DIR/images
IMG_BUSYBOX=dsm-test/busybox:1
IMG_WEB_10=dsm-test/web:1.0
IMG_WEB_11=dsm-test/web:1.1
IMG_WEB_BROKEN=dsm-test/web:2.0-broken
IMG_WEB_NOHC=dsm-test/web:1.0-nohc
IMG_PG_ROOTFS=dsm-test/postgres-rootfs:15
IMG_PG=dsm-test/postgres:15
PG_TARBALL=${DSM_CACHE_DIR}/postgres15-rootfs.tar
IMG_PROXY_ROOTFS=dsm-test/proxy-rootfs:1
IMG_PROXY=dsm-test/proxy:1
PROXY_TARBALL=${DSM_CACHE_DIR}/proxy-haproxy-rootfs.tar
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

image_id() { dk image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

image_recipe() { dk image inspect --format '{{index .Config.Labels "dsm.test.recipe"}}' "$1" 2>/dev/null || true; }

# Fingerprints. Derived images include the id of the image they are built FROM.
fp_busybox() { fingerprint busybox-v1 "$IMAGES_DIR/busybox/mkrootfs.sh"; }
fp_pg_tarball() { fingerprint pg-rootfs-v1 "${DSM_PG_SUITE:-bookworm}" "$IMAGES_DIR/postgres/mkrootfs.sh"; }
fp_pg_rootfs() { fp_pg_tarball; }
fp_proxy_tarball() { fingerprint proxy-rootfs-v1 "${DSM_PROXY_SUITE:-${DSM_PG_SUITE:-bookworm}}" "$IMAGES_DIR/proxy/mkrootfs.sh"; }
fp_proxy() {
    fingerprint proxy-v1 "$(image_id "$IMG_PROXY_ROOTFS")" \
        "$IMAGES_DIR/proxy/Dockerfile" "$IMAGES_DIR/proxy/proxy-start.sh" "$IMAGES_DIR/proxy/haproxy.cfg"
}
fp_web() { # VERSION BROKEN TARGET
    fingerprint web-v1 "$1" "$2" "$3" "$(image_id "$IMG_BUSYBOX")" \
        "$IMAGES_DIR/web/Dockerfile" "$IMAGES_DIR/web/web-start.sh"
}
fp_pg() {
    fingerprint pg-v1 "$(image_id "$IMG_PG_ROOTFS")" \
        "$IMAGES_DIR/postgres/Dockerfile" "$IMAGES_DIR/postgres/docker-entrypoint.sh"
}

image_current() { [ -n "$2" ] && [ "$(image_recipe "$1")" = "$2" ]; }

# After a rebuild the previous image may be left untagged; drop it if nothing uses it.
drop_if_dangling() {
    local old=$1
    [ -n "$old" ] || return 0
    if [ -z "$(dk image inspect --format '{{join .RepoTags ","}}' "$old" 2>/dev/null)" ]; then
        dk image rm "$old" >/dev/null 2>&1 || true
    fi
}

BUILD_LOG=${DSM_STATE_DIR}/build.log

# legacy_build TAG FP CONTEXT [docker build args...]
legacy_build() {
    local tag=$1 fp=$2 ctx=$3; shift 3
    local old
    old=$(image_id "$tag")
    printf '\n==== %s build %s\n' "$(date -Is)" "$tag" >>"$BUILD_LOG"
    if ! DOCKER_BUILDKIT=0 dk build --pull=false --rm --force-rm \
        --label dsm.test=1 --label "dsm.test.recipe=$fp" -t "$tag" "$@" "$ctx" >>"$BUILD_LOG" 2>&1; then
        tail -n 15 "$BUILD_LOG" | sed 's/^/provision:   build: /' >&2
        die "docker build of $tag failed" "full log: $BUILD_LOG"
    fi
    [ "$old" = "$(image_id "$tag")" ] || drop_if_dangling "$old"
}

ensure_busybox_image() {
    local fp
    fp=$(fp_busybox)
    if image_current "$IMG_BUSYBOX" "$fp"; then
        log "image $IMG_BUSYBOX present"
        return 0
    fi
    local bb old
    bb=$(busybox_static_bin) || die "no statically linked busybox found (looked at ${DSM_BUSYBOX_BIN:-/bin/busybox})" \
        "get it: apt-get install busybox-static   (or set DSM_BUSYBOX_BIN)"
    log "building $IMG_BUSYBOX from $bb (docker import)"
    old=$(image_id "$IMG_BUSYBOX")
    "$IMAGES_DIR/busybox/mkrootfs.sh" "$bb" | dk import \
        --change 'LABEL dsm.test=1' \
        --change "LABEL dsm.test.recipe=$fp" \
        --change "ENV PATH=$STD_PATH" \
        --change 'CMD ["sh"]' \
        --message 'docker-stack-mcp test base (busybox-static)' \
        - "$IMG_BUSYBOX" >/dev/null || die "docker import of $IMG_BUSYBOX failed"
    drop_if_dangling "$old"
}

# ensure_web_image TAG VERSION BROKEN TARGET
ensure_web_image() {
    local tag=$1 version=$2 broken=$3 target=$4 fp
    fp=$(fp_web "$version" "$broken" "$target")
    if image_current "$tag" "$fp"; then
        log "image $tag present"
        return 0
    fi
    log "building $tag (docker build, legacy builder, offline)"
    legacy_build "$tag" "$fp" "$IMAGES_DIR/web" --target "$target" \
        --build-arg "BASE=$IMG_BUSYBOX" --build-arg "VERSION=$version" --build-arg "BROKEN=$broken"
}

# Debian mirror for debootstrap: DSM_DEBIAN_MIRROR, else the first main-archive source apt
# is configured with (deb822 *.sources or one-line *.list) that serves the wanted suite.
debian_mirror() {
    local suite=${DSM_PG_SUITE:-bookworm} uri
    if [ -n "${DSM_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$DSM_DEBIAN_MIRROR"
        return 0
    fi
    while read -r uri; do
        [ -n "$uri" ] || continue
        if curl -fsS -o /dev/null -I --connect-timeout 5 --max-time 15 "${uri%/}/dists/$suite/Release"; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done < <(python3 - <<'PY'
import glob, re
uris = []
def add(types, uri_list, suites, comps):
    if "deb" not in types or "main" not in comps:
        return
    if all(s.endswith(("-security", "-updates", "-backports", "/updates")) for s in suites):
        return
    for u in uri_list:
        if u.startswith(("http://", "https://")) and u not in uris:
            uris.append(u)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        text = open(path).read()
    except OSError:
        continue
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            if ":" in line:
                key, val = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        add(fields.get("types", "").split(), fields.get("uris", "").split(),
            fields.get("suites", "").split(), fields.get("components", "").split())
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(line) >= 4:
            add([line[0]], [line[1]], [line[2]], line[3:])
print("\n".join(uris))
PY
)
    return 1
}

# Export apt's HTTP proxy (if any) for debootstrap's downloads.
apt_proxy_env() {
    local p=
    [ -n "${http_proxy:-}" ] && return 0
    have apt-config || return 0
    eval "$(apt-config shell p Acquire::http::Proxy 2>/dev/null)" || true
    if [ -n "$p" ] && [ "$p" != DIRECT ]; then
        export http_proxy=$p
    fi
}

pg_tarball_current() {
    [ -s "$PG_TARBALL" ] && [ "$(cat "$PG_TARBALL.fp" 2>/dev/null)" = "$(fp_pg_tarball)" ]
}

ensure_pg_images() {
    local fp_root fp old
    fp_root=$(fp_pg_rootfs)
    if image_current "$IMG_PG_ROOTFS" "$fp_root"; then
        log "image $IMG_PG_ROOTFS present"
    else
        if pg_tarball_current; then
            log "using cached rootfs $PG_TARBALL"
        else
            is_root || die "building the PostgreSQL rootfs needs root (debootstrap)" \
                "run: sudo bash scripts/provision.sh   (or provide $PG_TARBALL)"
            have debootstrap || die "debootstrap is not installed" "get it: apt-get install debootstrap"
            local mirror
            mirror=$(debian_mirror) || die "no reachable Debian mirror serving ${DSM_PG_SUITE:-bookworm} found in apt sources" \
                "set DSM_DEBIAN_MIRROR=<mirror URL> (the Debian archive your apt uses)"
            apt_proxy_env
            log "building PostgreSQL 15 rootfs with debootstrap from $mirror (about a minute)"
            mkdir -p "$DSM_CACHE_DIR"
            "$IMAGES_DIR/postgres/mkrootfs.sh" "$PG_TARBALL" "$mirror" || die "PostgreSQL rootfs build failed"
            fp_pg_tarball >"$PG_TARBALL.fp"
        fi
        log "importing $IMG_PG_ROOTFS from $PG_TARBALL"
        old=$(image_id "$IMG_PG_ROOTFS")
        dk import \
            --change 'LABEL dsm.test=1' \
            --change "LABEL dsm.test.recipe=$fp_root" \
            --change "ENV PATH=$STD_PATH" \
            --change 'CMD ["bash"]' \
            --message 'docker-stack-mcp test: debootstrap bookworm + postgresql-15' \
            "$PG_TARBALL" "$IMG_PG_ROOTFS" >/dev/null || die "docker import of $IMG_PG_ROOTFS failed"
        drop_if_dangling "$old"
    fi
    fp=$(fp_pg)
    if image_current "$IMG_PG" "$fp"; then
        log "image $IMG_PG present"
        return 0
    fi
    log "building $IMG_PG (docker build, legacy builder, offline)"
    legacy_build "$IMG_PG" "$fp" "$IMAGES_DIR/postgres" --build-arg "BASE=$IMG_PG_ROOTFS"
}

proxy_tarball_current() {
    [ -s "$PROXY_TARBALL" ] && [ "$(cat "$PROXY_TARBALL.fp" 2>/dev/null)" = "$(fp_proxy_tarball)" ]
}

# dsm-test/proxy:1: HAProxy from Debian's packages (debootstrap minbase + haproxy, ~30 s and
# ~30 MB of downloads the first time; the tarball is cached like PostgreSQL's).
ensure_proxy_images() {
    local fp_root fp old
    fp_root=$(fp_proxy_tarball)
    if image_current "$IMG_PROXY_ROOTFS" "$fp_root"; then
        log "image $IMG_PROXY_ROOTFS present"
    else
        if proxy_tarball_current; then
            log "using cached rootfs $PROXY_TARBALL"
        else
            is_root || die "building the proxy rootfs needs root (debootstrap)" \
                "run: sudo bash scripts/provision.sh   (or provide $PROXY_TARBALL)"
            have debootstrap || die "debootstrap is not installed" "get it: apt-get install debootstrap"
            local mirror
            mirror=$(DSM_PG_SUITE=${DSM_PROXY_SUITE:-${DSM_PG_SUITE:-bookworm}} debian_mirror) \
                || die "no reachable Debian mirror serving ${DSM_PROXY_SUITE:-${DSM_PG_SUITE:-bookworm}} found in apt sources" \
                "set DSM_DEBIAN_MIRROR=<mirror URL> (the Debian archive your apt uses)"
            apt_proxy_env
            log "building HAProxy rootfs with debootstrap from $mirror (about 30 s)"
            mkdir -p "$DSM_CACHE_DIR"
            "$IMAGES_DIR/proxy/mkrootfs.sh" "$PROXY_TARBALL" "$mirror" || die "proxy rootfs build failed"
            fp_proxy_tarball >"$PROXY_TARBALL.fp"
        fi
        log "importing $IMG_PROXY_ROOTFS from $PROXY_TARBALL"
        old=$(image_id "$IMG_PROXY_ROOTFS")
        dk import \
            --change 'LABEL dsm.test=1' \
            --change "LABEL dsm.test.recipe=$fp_root" \
            --change "ENV PATH=$STD_PATH" \
            --change 'CMD ["bash"]' \
            --message 'docker-stack-mcp test: debootstrap bookworm + haproxy' \
            "$PROXY_TARBALL" "$IMG_PROXY_ROOTFS" >/dev/null || die "docker import of $IMG_PROXY_ROOTFS failed"
        drop_if_dangling "$old"
    fi
    fp=$(fp_proxy)
    if image_current "$IMG_PROXY" "$fp"; then
        log "image $IMG_PROXY present"
        return 0
    fi
    log "building $IMG_PROXY (docker build, legacy builder, offline)"
    legacy_build "$IMG_PROXY" "$fp" "$IMAGES_DIR/proxy" --build-arg "BASE=$IMG_PROXY_ROOTFS"
}

ensure_images() {
    ensure_busybox_image
    ensure_web_image "$IMG_WEB_10" 1.0 0 web
    ensure_web_image "$IMG_WEB_11" 1.1 0 web
    ensure_web_image "$IMG_WEB_BROKEN" 2.0 1 web
    ensure_web_image "$IMG_WEB_NOHC" 1.0 0 nohc
    ensure_pg_images
    ensure_proxy_images
}

# --- smoke tests of freshly built images --------------------------------------

SMOKE_CONTAINERS=()
smoke_cleanup() {
    [ "${#SMOKE_CONTAINERS[@]}" -gt 0 ] || return 0
    timeout 60 docker rm -f "${SMOKE_CONTAINERS[@]}" >/dev/null 2>&1 || true
    SMOKE_CONTAINERS=()
}

smoke_run() { # IMAGE [docker run args...] -> sets SMOKE_NAME (no subshell: the list must persist)
    local image=$1; shift
    SMOKE_NAME="dsm-provision-smoke-$$-${#SMOKE_CONTAINERS[@]}"
    SMOKE_CONTAINERS+=("$SMOKE_NAME")
    dk run -d --name "$SMOKE_NAME" --label dsm.test=1 "$@" "$image" >/dev/null || smoke_fail "$image" "docker run failed"
}

# smoke_wait NAME WANT(healthy|exited|running) SECONDS
smoke_wait() {
    local name=$1 want=$2 limit=$3 deadline state
    deadline=$((SECONDS + limit))
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(dk inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$name" 2>/dev/null || echo "gone")
        case "$want:$state" in
            healthy:"running healthy "*) return 0 ;;
            exited:"exited "*) SMOKE_EXIT=${state##* }; return 0 ;;
            running:"running "*) return 0 ;;
            healthy:"exited "* | healthy:*unhealthy* | healthy:gone) break ;;
        esac
        sleep 0.5
    done
    warn "$name: wanted $want, state is: $state"
    dk logs --tail 20 "$name" 2>&1 | sed 's/^/provision:   container: /' >&2 || true
    return 1
}

smoke_fail() { # IMAGE MESSAGE
    dk image rm -f "$1" >/dev/null 2>&1 || true
    smoke_cleanup
    die "smoke test of freshly built $1 failed: $2" "the image was removed; fix the recipe and re-run"
}

# Every image id is smoke-tested once; a marker file per passed id makes later runs skip it
# (also covers images built by a run that was interrupted before its smoke tests).
SMOKE_DIR=${DSM_STATE_DIR}/smoke-ok
smoke_marker() { local id; id=$(image_id "$1"); [ -n "$id" ] && printf '%s/%s\n' "$SMOKE_DIR" "${id#sha256:}"; }

smoke_test_images() {
    local image name out marker ok net
    for image in "$IMG_BUSYBOX" "$IMG_WEB_10" "$IMG_WEB_11" "$IMG_WEB_BROKEN" "$IMG_WEB_NOHC" "$IMG_PG" "$IMG_PROXY"; do
        marker=$(smoke_marker "$image") || smoke_fail "$image" "image missing"
        [ -f "$marker" ] && continue
        log "smoke testing $image"
        case "$image" in
            "$IMG_BUSYBOX")
                # shellcheck disable=SC2016  # $a expands inside the container
                out=$(dk run --rm --label dsm.test=1 "$image" sh -c 'for a in httpd wget nc sleep cat echo; do command -v $a >/dev/null || exit 1; done; echo ok' 2>&1) \
                    && [ "$out" = ok ] || smoke_fail "$image" "applets missing ($out)" ;;
            "$IMG_WEB_10" | "$IMG_WEB_11")
                smoke_run "$image"; name=$SMOKE_NAME
                smoke_wait "$name" healthy 30 || smoke_fail "$image" "did not become healthy"
                out=$(dk exec "$name" wget -qO- http://127.0.0.1/)
                [ "$out" = "web ${image##*:}" ] || smoke_fail "$image" "served '$out'" ;;
            "$IMG_WEB_NOHC")
                smoke_run "$image"; name=$SMOKE_NAME
                smoke_wait "$name" running 10 || smoke_fail "$image" "not running"
                wait_until 10 "$image to serve" dk exec "$name" wget -qO- http://127.0.0.1/ || smoke_fail "$image" "does not serve"
                [ "$(dk image inspect --format '{{.Config.Healthcheck}}' "$image")" = "<nil>" ] || smoke_fail "$image" "has a healthcheck" ;;
            "$IMG_WEB_BROKEN")
                smoke_run "$image"; name=$SMOKE_NAME
                smoke_wait "$name" exited 30 || smoke_fail "$image" "did not exit"
                [ "$SMOKE_EXIT" = 1 ] || smoke_fail "$image" "exit code $SMOKE_EXIT, want 1" ;;
            "$IMG_PG")
                smoke_run "$image" -e POSTGRES_PASSWORD=smoke; name=$SMOKE_NAME
                smoke_wait "$name" healthy 120 || smoke_fail "$image" "did not become healthy"
                out=$(dk exec "$name" psql -U postgres -tAc 'select 1' 2>&1) && [ "$out" = 1 ] \
                    || smoke_fail "$image" "psql select 1 gave: $out" ;;
            "$IMG_PROXY")
                # A real round trip: the proxy finds a web container by its DNS name on a network.
                net="dsm-provision-smoke-$$"
                dk network create --label dsm.test=1 "$net" >/dev/null || smoke_fail "$image" "network create failed"
                smoke_run "$IMG_WEB_10" --network "$net" --network-alias smokeweb
                smoke_run "$image" --network "$net" -e PROXY_BACKEND=smokeweb:80; name=$SMOKE_NAME
                ok=0
                smoke_wait "$name" healthy 30 || ok=1
                [ "$ok" = 1 ] || wait_until 20 "$image to proxy to web" dk exec "$name" bash -c \
                    'exec 3<>/dev/tcp/127.0.0.1/80; printf "GET / HTTP/1.0\r\n\r\n" >&3; grep -q "^web 1.0" <&3' || ok=1
                smoke_cleanup
                dk network rm "$net" >/dev/null 2>&1 || true
                [ "$ok" = 0 ] || smoke_fail "$image" "did not become healthy, or did not proxy to a web container found through Docker's DNS" ;;
        esac
        smoke_cleanup
        mkdir -p "$SMOKE_DIR"
        : >"$marker"
        log "smoke test ok: $image"
    done
}
