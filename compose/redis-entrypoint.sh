#!/bin/sh
# Entrypoint of the stack's redis service (mounted into the official redis image).
#
# Writes the ACL file from the environment (.env), then starts the command it was given
# (redis-server ...) with `--aclfile` appended, through the image's own entrypoint when there
# is one (it drops root and chowns /data). Outside the image (the stack test runs this very
# script with a local redis-server) it execs the command directly.
#
#   default          off, no password, no keys, no commands
#   REDIS_AGENT_*    what the `pulse` CLI and the Python API send, on PULSE_NAMESPACE only
#   REDIS_WORKER_*   that, plus the stream commands of pulse-relay (relay, mirror, --check)
#   REDIS_ADMIN_*    only when REDIS_ADMIN_PASSWORD is set: every key and command, for the
#                    operator's redis-cli (INFO, ACL LOG, BGREWRITEAOF, ...)
#
# Every key of a namespace is pulse:{NS}:..., its pub/sub channel pulse:{NS}:events: one key
# pattern and one channel pattern cover it. Commands run inside the Lua scripts (HSET, ZADD,
# XADD, PUBLISH, ...) are checked against the caller's ACL too, so they are listed here.
set -eu

ns="${PULSE_NAMESPACE:-default}"
aclfile="${REDIS_ACLFILE:-/usr/local/etc/redis/users.acl}"

fail() {
    echo "pulse-redis: $*" >&2
    exit 1
}

# Names and passwords go into redis:// URLs and space-separated ACL lines: URL-safe only.
check() {
    case "$2" in
        "") fail "$1 is empty: set it in compose/.env (see .env.example)" ;;
        *[!A-Za-z0-9._~-]*) fail "$1 may hold only letters, digits and . _ ~ -" ;;
    esac
}
check PULSE_NAMESPACE "$ns"
check REDIS_AGENT_USER "${REDIS_AGENT_USER:-}"
check REDIS_AGENT_PASSWORD "${REDIS_AGENT_PASSWORD:-}"
check REDIS_WORKER_USER "${REDIS_WORKER_USER:-}"
check REDIS_WORKER_PASSWORD "${REDIS_WORKER_PASSWORD:-}"
admin="${REDIS_ADMIN_USER:-pulse-admin}"
users="$REDIS_AGENT_USER $REDIS_WORKER_USER"
if [ -n "${REDIS_ADMIN_PASSWORD:-}" ]; then
    check REDIS_ADMIN_USER "$admin"
    check REDIS_ADMIN_PASSWORD "$REDIS_ADMIN_PASSWORD"
    users="$users $admin"
fi
names=",default,"
for u in $users; do
    names="$names,$u,"
done
for u in $users; do
    case "$names" in
        *",$u,"*",$u,"*) fail "user name '$u' is taken twice ('default' is switched off)" ;;
    esac
done
for pw in "$REDIS_AGENT_PASSWORD" "$REDIS_WORKER_PASSWORD" "${REDIS_ADMIN_PASSWORD:-}"; do
    case "$pw" in
        change-me*) echo "pulse-redis: WARNING: a password is still the .env.example" \
            "placeholder; set real ones (openssl rand -hex 24)" >&2 ;;
    esac
done

scope="resetkeys ~pulse:{$ns}:* resetchannels &pulse:{$ns}:*"
# The rules of docs/acl.md (tests/test_compose.py keeps the two the same): the CLI's reads; its
# scripts and what they call; cleanup; `pulse watch`; connection (AUTH/HELLO need no rule)
agent="-@all +evalsha +eval +hget +hmget +hset +hdel +exists +expire +pexpireat"
agent="$agent +zadd +zrem +zrange +zrangebylex +zrangebyscore +zrevrange +zrevrangebyscore"
agent="$agent +del +xadd +publish +subscribe +ping +select"
# the step history: its cap (update.lua) and `pulse history`
agent="$agent +zcard +hscan"
# consumer groups, lag, dead letters, the sinks' memory, the relays' presence
worker="$agent +xgroup +xreadgroup +xautoclaim +xack +xpending +xinfo +xrange +xlen +xdel"
worker="$worker +xrevrange +xread +get +set +pexpire"

mkdir -p "$(dirname "$aclfile")"
umask 077
{
    echo "user default off resetpass resetkeys resetchannels -@all"
    echo "user $REDIS_AGENT_USER on resetpass >$REDIS_AGENT_PASSWORD $scope $agent"
    echo "user $REDIS_WORKER_USER on resetpass >$REDIS_WORKER_PASSWORD $scope $worker"
    if [ -n "${REDIS_ADMIN_PASSWORD:-}" ]; then
        echo "user $admin on resetpass >$REDIS_ADMIN_PASSWORD ~* &* +@all"
    fi
} >"$aclfile"
# the image's entrypoint runs redis-server as the user redis
if id redis >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    chown redis "$aclfile"
fi

if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh "$@" --aclfile "$aclfile"
fi
exec "$@" --aclfile "$aclfile"
