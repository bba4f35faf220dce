#!/bin/bash
# Entry point of dsm-test/postgres:15 (a small subset of the official postgres image's one).
# First start: initdb in $PGDATA, set the superuser password, listen on all addresses with
# password (scram-sha-256) auth for TCP, create POSTGRES_DB, run /docker-entrypoint-initdb.d.
# Then exec postgres in the foreground as user postgres (PID 1, gets the stop signal).
set -euo pipefail

# setpriv execs the command directly (no extra process, signals reach postgres); runuser as fallback.
if command -v setpriv >/dev/null 2>&1; then
    AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
    AS_POSTGRES=(runuser -u postgres --)
fi
[ "$(id -u)" = 0 ] || AS_POSTGRES=()
as_postgres() { "${AS_POSTGRES[@]}" "$@"; }

# file_env VAR: VAR may also come from the file named by VAR_FILE (docker secrets).
file_env() {
    local var=$1 file_var="${1}_FILE" def=${2:-}
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        echo "error: both $var and $file_var are set (they are exclusive)" >&2
        exit 1
    fi
    local val=$def
    if [ -n "${!var:-}" ]; then
        val=${!var}
    elif [ -n "${!file_var:-}" ]; then
        val=$(<"${!file_var}")
    fi
    export "$var"="$val"
    unset "$file_var"
}

if [ "${1:-}" = postgres ] || [ "${1#-}" != "${1:-}" ]; then
    [ "${1:-}" = postgres ] && shift
    set -- postgres "$@"
    PGDATA=${PGDATA:-/var/lib/postgresql/data}
    mkdir -p "$PGDATA" /var/run/postgresql
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$PGDATA" /var/run/postgresql
        chmod 0700 "$PGDATA"
        chmod 2777 /var/run/postgresql
    fi

    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        file_env POSTGRES_PASSWORD
        file_env POSTGRES_USER postgres
        file_env POSTGRES_DB "$POSTGRES_USER"
        file_env POSTGRES_INITDB_ARGS
        auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
        if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
            cat >&2 <<'MSG'
error: database is uninitialized and superuser password is not specified.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value,
       or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password.
MSG
            exit 1
        fi
        echo "entrypoint: initialising database cluster in $PGDATA" >&2
        pwfile=
        if [ -n "$POSTGRES_PASSWORD" ]; then
            pwfile=$(mktemp /tmp/pgpw.XXXXXX)
            printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
            chown postgres "$pwfile"
            chmod 0600 "$pwfile"
        fi
        # shellcheck disable=SC2086
        as_postgres initdb -D "$PGDATA" --username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host="$auth" ${pwfile:+--pwfile="$pwfile"} $POSTGRES_INITDB_ARGS >&2
        [ -n "$pwfile" ] && rm -f "$pwfile"
        {
            echo
            echo "# added by docker-entrypoint.sh"
            echo "host all all all $auth"
        } >>"$PGDATA/pg_hba.conf"
        {
            echo
            echo "# added by docker-entrypoint.sh"
            echo "listen_addresses = '*'"
            echo "unix_socket_directories = '/var/run/postgresql'"
        } >>"$PGDATA/postgresql.conf"

        # Temporary socket-only server for POSTGRES_DB and the init scripts.
        as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >&2
        psql_q=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres -q)
        if [ "$POSTGRES_DB" != postgres ]; then
            "${psql_q[@]}" --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            [ -e "$f" ] || continue
            # shellcheck disable=SC1090  # init scripts are sourced, like the official image does
            case "$f" in
                *.sh) echo "entrypoint: running $f" >&2; . "$f" ;;
                *.sql) echo "entrypoint: running $f" >&2; "${psql_q[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
                *.sql.gz) echo "entrypoint: running $f" >&2; gzip -dc "$f" | "${psql_q[@]}" --dbname "$POSTGRES_DB" >&2 ;;
                *) echo "entrypoint: ignoring $f" >&2 ;;
            esac
        done
        as_postgres pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >&2
        echo "entrypoint: initialisation complete" >&2
    fi
    unset POSTGRES_PASSWORD
    exec "${AS_POSTGRES[@]}" "$@" -D "$PGDATA"
fi

exec "$@"
