#!/usr/bin/env bash
# CADDY vs etcd, side by side on this machine: 3-node clusters of each on
# loopback, TLS on client and peer traffic, fsync before every acknowledged
# write. See benches/README.md.
#
# Environment:
#   BENCH_SECS        measured seconds per kv run (default 10)
#   BENCH_WARMUP      unmeasured warm-up seconds before each kv run (default 1)
#   BENCH_KILLS       leader kills per system in the failover run (default 10; 0 skips it)
#   BENCH_CLIENTS     client counts, space-separated (default "1 64")
#   BENCH_KV          0: skip the key-value and memory runs (default 1)
#   BENCH_FANOUT      0: skip the document fan-out run (default 1)
#   BENCH_FILES       0: skip the file throughput run (CADDY vs a plain TCP+TLS copy; default 1)
#   BENCH_SKIP_BUILD  1: use the existing release binaries
#   BENCH_TMPDIR      parent of the throwaway directory (default /tmp; must be a real disk)
#   BENCH_KEEP_TMP    1: keep the throwaway directory (logs, data) on exit
#   BENCH_RESULTS_DIR where latest.json goes (default benches/results)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SECS=${BENCH_SECS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_KILLS=${BENCH_KILLS:-10}
BENCH_CLIENTS=${BENCH_CLIENTS:-"1 64"}
BENCH_KV=${BENCH_KV:-1}
BENCH_FANOUT=${BENCH_FANOUT:-1}
BENCH_FILES=${BENCH_FILES:-1}
VALUE_SIZE=256
KEYS=10000
FAILOVER_CLIENTS=8
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/benches/results}
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

TMP=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/caddy-bench.XXXXXX")
DEV_PID=""

# Signals `pid` (only if it is still the program we started) and waits for
# it to exit, escalating to SIGKILL after `grace` seconds.
stop_pid() {
    local pid=$1 what=$2 grace=${3:-10} i
    [[ -n "$pid" && -d /proc/$pid ]] || return 0
    grep -qa -- "$what" "/proc/$pid/cmdline" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        [[ -d /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || return 0
        sleep 0.1
    done
    log "PID $pid ($what) did not stop in ${grace}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? f
    trap - EXIT INT TERM
    log "cleaning up"
    # The dev supervisor stops the nodes it started; nodes restarted by the
    # failover run are stopped through their PID files.
    stop_pid "$DEV_PID" caddyd 20
    for f in "$TMP"/caddy/node*/caddyd.pid; do
        [[ -f $f ]] && stop_pid "$(cat "$f")" caddyd 15
    done
    for f in "$TMP"/etcd/m*.pid; do
        [[ -f $f ]] && stop_pid "$(cat "$f")" etcd 15
    done
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fstype=$(stat -f -c %T "$TMP")
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
    die "$TMP is on $fstype: fsync would be free; set BENCH_TMPDIR to a directory on a real disk"
fi

# ----- prerequisites -----
if ! command -v etcd >/dev/null; then
    [[ $(id -u) == 0 ]] || die "etcd is not installed and we are not root (apt-get install etcd-server)"
    log "installing etcd-server and etcd-client from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
fi
command -v openssl >/dev/null || die "openssl is required"
ETCD_VERSION=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    # etcd-client's build script needs protoc; the workspace already vendors one.
    if [[ -z ${PROTOC:-} ]] && ! command -v protoc >/dev/null; then
        arch=$(uname -m); [[ $arch == aarch64 ]] && arch=aarch_64
        PROTOC=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 4 -type f -path "*protoc-bin-vendored-linux-${arch}-*/bin/protoc" 2>/dev/null | sort | tail -n 1)
        if [[ -z $PROTOC ]]; then
            [[ $(id -u) == 0 ]] || die "protoc not found (apt-get install protobuf-compiler)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
            PROTOC=$(command -v protoc)
        fi
        export PROTOC
    fi
    log "building release binaries (first time: several minutes)"
    (cd "$ROOT" && cargo build --release -p caddy-bench -p caddy-server -p caddy-cli)
fi
for b in caddy-bench caddyd caddyctl; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (build with: cargo build --release -p caddy-bench -p caddy-server -p caddy-cli)"
done
BENCH=$BIN/caddy-bench

# ----- etcd: certificates and a 3-member cluster -----
mkdir -p "$TMP/etcd" "$TMP/pki"
(
    cd "$TMP/pki"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=caddy-bench etcd CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req "${ec[@]}" -keyout member.key -out member.csr -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >member.ext
    openssl x509 -req -in member.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out member.pem -days 2 \
        -extfile member.ext 2>/dev/null
    chmod 600 ./*.key
)
PKI=$TMP/pki

read -r -a PORTS <<<"$("$BENCH" free-ports 6)"
ETCD_CLUSTER=""
ETCD_ENDPOINTS=""
for i in 1 2 3; do
    peer=${PORTS[$((i + 2))]}
    ETCD_CLUSTER+="${ETCD_CLUSTER:+,}m$i=https://127.0.0.1:$peer"
done
for i in 1 2 3; do
    client=${PORTS[$((i - 1))]}
    peer=${PORTS[$((i + 2))]}
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}https://127.0.0.1:$client"
    # mN.sh records its PID, then becomes the etcd member: the failover run
    # restarts a killed member by running it again. Clients verify the server
    # (no --trusted-ca-file: etcd would then demand client certificates, and
    # CADDY clients authenticate with a bearer credential, not a certificate);
    # peers authenticate each other with certificates, as CADDY's do.
    cat >"$TMP/etcd/m$i.sh" <<EOF
#!/usr/bin/env bash
echo \$\$ >"$TMP/etcd/m$i.pid"
exec etcd --name m$i --data-dir "$TMP/etcd/m$i.data" \\
  --listen-client-urls https://127.0.0.1:$client --advertise-client-urls https://127.0.0.1:$client \\
  --listen-peer-urls https://127.0.0.1:$peer --initial-advertise-peer-urls https://127.0.0.1:$peer \\
  --initial-cluster $ETCD_CLUSTER --initial-cluster-token caddy-bench --initial-cluster-state new \\
  --cert-file "$PKI/member.pem" --key-file "$PKI/member.key" \\
  --peer-cert-file "$PKI/member.pem" --peer-key-file "$PKI/member.key" --peer-trusted-ca-file "$PKI/ca.pem" \\
  --peer-client-cert-auth --logger zap --log-outputs stderr --log-level warn >>"$TMP/etcd/m$i.log" 2>&1
EOF
done
log "starting etcd $ETCD_VERSION: $ETCD_ENDPOINTS"
for i in 1 2 3; do
    bash "$TMP/etcd/m$i.sh" &
    disown  # killed by the failover run on purpose: no job-control notices
done
ETCD_TARGET=(--system etcd --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-ca "$PKI/ca.pem")
"$BENCH" wait-healthy "${ETCD_TARGET[@]}" --timeout 60 || {
    tail -n 20 "$TMP"/etcd/m*.log >&2
    die "etcd did not become healthy"
}
if command -v etcdctl >/dev/null; then
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" --cacert "$PKI/ca.pem" --command-timeout 5s \
        endpoint status -w table >&2 || true
fi

# ----- CADDY: a 3-node dev cluster -----
CADDY_DIR=$TMP/caddy
log "starting a 3-node CADDY dev cluster in $CADDY_DIR"
"$BIN/caddyd" dev --nodes 3 --dir "$CADDY_DIR" >"$TMP/caddy-dev.log" 2>&1 &
DEV_PID=$!
CADDY_CONFIG=$CADDY_DIR/client.toml
deadline=$((SECONDS + 120))
until [[ -f $CADDY_CONFIG ]] && "$BIN/caddyctl" --config "$CADDY_CONFIG" cluster status >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || [[ ! -d /proc/$DEV_PID ]]; then
        cat "$TMP/caddy-dev.log" >&2
        tail -n 20 "$CADDY_DIR"/node*/caddyd.log >&2 || true
        die "the CADDY cluster did not come up"
    fi
    sleep 0.5
done
CADDY_TARGET=(--system caddy --caddy-config "$CADDY_CONFIG")
"$BENCH" wait-healthy "${CADDY_TARGET[@]}" --timeout 120 || die "CADDY did not become healthy"
"$BIN/caddyctl" --config "$CADDY_CONFIG" cluster status >&2

# ----- measurements -----
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

pids_of() {
    local f pids=""
    if [[ $1 == caddy ]]; then
        for f in "$CADDY_DIR"/node*/caddyd.pid; do pids+="${pids:+,}$(cat "$f")"; done
    else
        for f in "$TMP"/etcd/m*.pid; do pids+="${pids:+,}$(cat "$f")"; done
    fi
    echo "$pids"
}
# Runs one step, appending its JSON line to the results; a failed step is
# recorded and the run goes on.
step() {
    local name=$1 limit=$2
    shift 2
    log "$name"
    if ! timeout --kill-after=10 "$limit" "$@" >>"$RESULTS"; then
        log "step failed: $name"
        printf '{"kind":"failed","step":"%s"}\n' "$name" >>"$RESULTS"
    fi
}
rss() { step "rss $1 $2" 30 "$BENCH" rss --system "$1" --label "$2" --pids "$(pids_of "$1")"; }

sleep 3
if ((BENCH_KV)); then
for sys in caddy etcd; do rss "$sys" idle; done

kv_limit=$((BENCH_SECS + BENCH_WARMUP + 180))
declare -A populated=()
for mode in write read; do
    for clients in $BENCH_CLIENTS; do
        # Systems alternate within each workload, so that a slow phase of the
        # shared machine does not land on one system only.
        for sys in caddy etcd; do
            if [[ $sys == caddy ]]; then target=("${CADDY_TARGET[@]}"); else target=("${ETCD_TARGET[@]}"); fi
            extra=()
            if [[ $mode == read && -z ${populated[$sys]:-} ]]; then
                extra=(--populate)
                populated[$sys]=1
            fi
            step "kv $sys $mode x$clients" "$kv_limit" "$BENCH" kv "${target[@]}" --mode "$mode" \
                --clients "$clients" --duration "$BENCH_SECS" --warmup "$BENCH_WARMUP" \
                --value-size "$VALUE_SIZE" --keys "$KEYS" "${extra[@]}"
            if [[ $clients == 64 ]]; then
                if [[ $mode == write ]]; then rss "$sys" load; else rss "$sys" after-reads; fi
            fi
        done
    done
done
fi

# Document updates committed and delivered to 10 subscribers spread over the
# members; etcd gets puts of the mean CADDY update size and prefix watches.
FANOUT=$TMP/fanout.jsonl
: >"$FANOUT"
if ((BENCH_FANOUT)); then
    log "fanout caddy (10 subscribers)"
    timeout --kill-after=10 300 "$BENCH" fanout "${CADDY_TARGET[@]}" --secs "$BENCH_SECS" >>"$FANOUT" \
        || log "step failed: fanout caddy"
    update_bytes=$(sed -n 's/.*"mean_update_bytes":\([0-9]*\).*/\1/p' "$FANOUT" | tail -n 1)
    log "fanout etcd (10 watchers, ${update_bytes:-160}-byte values)"
    timeout --kill-after=10 300 "$BENCH" fanout "${ETCD_TARGET[@]}" --secs "$BENCH_SECS" \
        --value-bytes "${update_bytes:-160}" >>"$FANOUT" || log "step failed: fanout etcd"
fi

# File upload and download MB/s (1 MB x5, 100 MB x2), against the same bytes
# copied over a plain TCP + TLS 1.3 stream in the bench process.
if ((BENCH_FILES)); then
    mkdir -p "$TMP/files"
    step "files caddy vs TCP+TLS (1 MB, 100 MB)" 900 "$BENCH" files --caddy-config "$CADDY_CONFIG" \
        --tmp "$TMP/files"
fi

if ((BENCH_KILLS > 0)); then
    fo_limit=$((BENCH_KILLS * 150 + 120))
    step "failover caddy ($BENCH_KILLS leader kills)" "$fo_limit" "$BENCH" failover "${CADDY_TARGET[@]}" \
        --kills "$BENCH_KILLS" --clients "$FAILOVER_CLIENTS" --value-size "$VALUE_SIZE" --keys "$KEYS" \
        --caddy-dir "$CADDY_DIR" --caddyd "$BIN/caddyd"
    step "failover etcd ($BENCH_KILLS leader kills)" "$fo_limit" "$BENCH" failover "${ETCD_TARGET[@]}" \
        --kills "$BENCH_KILLS" --clients "$FAILOVER_CLIENTS" --value-size "$VALUE_SIZE" --keys "$KEYS" \
        --etcd-dir "$TMP/etcd"
fi

# ----- report -----
if [[ -s $FANOUT ]]; then
    echo
    echo "document fan-out (one JSON line per system):"
    cat "$FANOUT"
fi
if ((!BENCH_KV && BENCH_KILLS == 0 && !BENCH_FILES)); then
    exit 0
fi
mkdir -p "$RESULTS_DIR"
echo
CADDY_REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo "CADDY $CADDY_REV vs etcd $ETCD_VERSION: 3 nodes each on loopback, TLS client+peer, fsync before ack;"
echo "$VALUE_SIZE-byte values, $KEYS keys, ${BENCH_SECS}s per run, $(nproc) CPUs ($(uname -r))"
echo
"$BENCH" report --input "$RESULTS" --output "$RESULTS_DIR/latest.json" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "caddy_commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" --meta "caddy_rev=$CADDY_REV" \
    --meta "etcd_version=$ETCD_VERSION" --meta "bench_secs=$BENCH_SECS" --meta "warmup_secs=$BENCH_WARMUP" \
    --meta "value_size=$VALUE_SIZE" --meta "keys=$KEYS" --meta "cpus=$(nproc)" --meta "kernel=$(uname -r)" \
    --meta "filesystem=$fstype" --meta "failover_clients=$FAILOVER_CLIENTS" --meta "kills=$BENCH_KILLS"
echo
log "results: $RESULTS_DIR/latest.json"
