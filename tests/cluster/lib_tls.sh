# tests/cluster/lib_tls.sh - sourced by the security tests (test_sec_*.sh), after lib_repl.sh
# (which it sources itself). Test certificates, made at run time in the test's temp dir (never
# committed), and starting servers that the plain `lockstep status` of lib.sh cannot probe
# (https, tokens, allow-lists).
#
#   make_test_pki DIR     makes, in DIR (PEM; EC P-256 keys):
#       ca.pem ca.key                the test CA
#       server.pem server.key        signed by the CA, for IP 127.0.0.1 (serverAuth + clientAuth:
#                                    a server uses its certificate as a client of its upstream too)
#       node2.pem node2.key          the same kind, a second node
#       client.pem client.key        a client certificate signed by the CA (clientAuth)
#       other-ca.pem other-ca.key    ANOTHER CA
#       other.pem other.key          signed by the other CA, for IP 127.0.0.1 (both usages)
#       expired.pem expired.key      signed by the CA, valid 2020-01-01 to 2020-01-02 (expired)
#   (start_server_ready NAME PORT READY SERVE-ARGS... is lib.sh's: up when the server listens
#                         on PORT and READY, a command line, succeeds; https with --tls-cert)
#   start_node_sec NAME READY [serve flags...]
#                         like lib_repl.sh's start_node (--data, --http 127.0.0.1:PORT, --listen
#                         127.0.0.1:PEERPORT, --name; PEER_<NAME>), with READY as above. In
#                         READY, $URL is the server's URL.
#   status_ok             a READY for http or https servers: `lockstep status --server $URL` (the
#                         caller exports LOCKSTEP_CACERT/CERT/KEY/TOKEN as needed)
#   http_listening        a READY that only needs the port to listen (e.g. --allow refusing us)
#   http_code ARGS...     curl -s -o /dev/null -w '%{http_code}' ARGS (000 when curl failed)
#   launch_node NAME [flags...], await_node NAME READY
#                         start_node_sec in two halves, to start several servers at once
source "$(dirname "${BASH_SOURCE[0]}")/lib_repl.sh"

# ---------------------------------------------------------------- certificates

_pki_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# _pki_ext FILE KIND: x509v3 extensions for a leaf certificate; KIND node (IP 127.0.0.1, both
# usages) or client
_pki_ext() {
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        if [[ "$2" == node ]]; then
            echo "extendedKeyUsage = serverAuth, clientAuth"
            echo "subjectAltName = IP:127.0.0.1"
        else
            echo "extendedKeyUsage = clientAuth"
        fi
    } >"$1"
}

# _pki_ca DIR NAME
_pki_ca() {
    local d=$1 n=$2
    _pki_key "$d/$n.key"
    openssl req -x509 -new -key "$d/$n.key" -sha256 -days 30 -subj "/CN=lockstep test $n" \
        -addext "basicConstraints = critical, CA:TRUE" \
        -addext "keyUsage = critical, keyCertSign, cRLSign" \
        -out "$d/$n.pem" 2>/dev/null
}

# _pki_leaf DIR NAME CA KIND: NAME.pem/.key signed by CA (its .pem/.key), 30 days
_pki_leaf() {
    local d=$1 n=$2 ca=$3 kind=$4
    _pki_key "$d/$n.key"
    openssl req -new -key "$d/$n.key" -subj "/CN=lockstep test $n" -out "$d/$n.csr" 2>/dev/null
    _pki_ext "$d/$n.ext" "$kind"
    openssl x509 -req -in "$d/$n.csr" -CA "$d/$ca.pem" -CAkey "$d/$ca.key" -CAcreateserial \
        -days 30 -sha256 -extfile "$d/$n.ext" -out "$d/$n.pem" 2>/dev/null
}

# _pki_expired DIR: expired.pem/.key, signed by ca, valid only in 2020 (`openssl ca` takes
# -startdate/-enddate; OpenSSL 3.0's `x509 -req` cannot backdate)
_pki_expired() {
    local d=$1 c="$1/ca-db"
    mkdir -p "$c/new"
    : >"$c/index.txt"
    echo 1000 >"$c/serial"
    cat >"$c/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $c/index.txt
new_certs_dir = $c/new
serial = $c/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1
EOF
    _pki_key "$d/expired.key"
    openssl req -new -key "$d/expired.key" -subj "/CN=lockstep test expired" \
        -out "$d/expired.csr" 2>/dev/null
    openssl ca -batch -config "$c/ca.cnf" -cert "$d/ca.pem" -keyfile "$d/ca.key" \
        -in "$d/expired.csr" -out "$d/expired.pem" -notext -extensions leaf \
        -startdate 20200101000000Z -enddate 20200102000000Z 2>"$c/err" ||
        fail "openssl ca (expired certificate): $(cat "$c/err")"
}

make_test_pki() {
    local d=$1 n
    mkdir -p "$d"
    _pki_ca "$d" ca
    _pki_ca "$d" other-ca
    _pki_leaf "$d" server ca node
    _pki_leaf "$d" node2 ca node
    _pki_leaf "$d" client ca client
    _pki_leaf "$d" other other-ca node
    _pki_expired "$d"
    # check what we made, so that a test failing later is not a certificate mistake
    for n in server node2 client expired; do
        [[ -s "$d/$n.pem" ]] || fail "test PKI: $n.pem was not made"
    done
    openssl verify -CAfile "$d/ca.pem" "$d/server.pem" "$d/node2.pem" "$d/client.pem" \
        >/dev/null 2>&1 || fail "test PKI: a leaf does not verify against ca.pem"
    openssl verify -CAfile "$d/other-ca.pem" "$d/other.pem" >/dev/null 2>&1 ||
        fail "test PKI: other.pem does not verify against other-ca.pem"
    ! openssl verify -CAfile "$d/ca.pem" "$d/other.pem" >/dev/null 2>&1 ||
        fail "test PKI: other.pem verifies against ca.pem"
    n=$(openssl verify -CAfile "$d/ca.pem" "$d/expired.pem" 2>&1 || true)
    [[ "$n" == *'certificate has expired'* ]] ||
        fail "test PKI: expired.pem is not an expired certificate of ca.pem: $n"
    openssl x509 -in "$d/expired.pem" -noout -checkend 0 >/dev/null 2>&1 &&
        fail "test PKI: expired.pem has not expired"
    return 0
}

# ---------------------------------------------------------------- servers

status_ok() { "$LOCKSTEP" status --server "$URL" >/dev/null 2>&1; }
http_listening() { true; }

http_code() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$@") || true
    printf '%s' "${code:-000}"
}

# start_node_sec NAME READY [serve flags...]
start_node_sec() {
    local name=$1 ready=$2 tries port
    shift 2
    [[ -z "${_PORT[$name]:-}" ]] || fail "start_node_sec: $name ran before (no restarts here)"
    _DATA[$name]="$T/$name"
    for ((tries = 0; tries < 5; tries++)); do
        port=$(free_port)
        _LISTEN[$name]=$(free_port)
        [[ "$port" != "${_LISTEN[$name]}" ]] || continue
        if start_server_ready "$name" "$port" "$ready" --data "${_DATA[$name]}" \
            --http "127.0.0.1:$port" --listen "$(peer_of "$name")" --name "$name" "$@"; then
            _server_vars "$name"
            printf -v "PEER_$name" '%s' "$(peer_of "$name")"
            return 0
        fi
        grep -qE 'Address already in use|cannot listen' "$T/$name.log" || break
    done
    fail "server $name did not start: $(tail -n 5 "$T/$name.log")"
}

# launch_node NAME [serve flags...]: start_node_sec without the wait, so that several servers
# start at once; then await_node NAME READY for each. (--data, --http, --listen and --name as in
# start_node; PEER_<NAME> is set by await_node, which starts the server again on new ports when
# the ones picked were taken meanwhile.)
declare -A _LAUNCH_ARGS=()
launch_node() {
    local name=$1 a
    shift
    [[ -z "${_PORT[$name]:-}" ]] || fail "launch_node: $name ran before (no restarts here)"
    [[ "$name" =~ ^[A-Za-z0-9_]+$ ]] || fail "server name '$name': use letters, digits and _"
    _LAUNCH_ARGS[$name]=""
    for a in "$@"; do _LAUNCH_ARGS[$name]+=" $(printf '%q' "$a")"; done
    _DATA[$name]="$T/$name"
    _launch "$name"
}

_launch() {
    local name=$1 port logf a scheme=http
    local -a args
    eval "args=(${_LAUNCH_ARGS[$name]})"
    for a in "${args[@]}"; do [[ "$a" != --tls-cert ]] || scheme=https; done
    port=$(free_port)
    _LISTEN[$name]=$(free_port)
    [[ "$port" != "${_LISTEN[$name]}" ]] || _LISTEN[$name]=$(free_port)
    logf="$T/$name.log"
    set -- --data "${_DATA[$name]}" --http "127.0.0.1:$port" --listen "$(peer_of "$name")" \
        --name "$name" "${args[@]}"
    echo "=== $(date +%T.%N) lockstep serve $*" >>"$logf"
    ASAN_OPTIONS="$ASAN_OPTIONS:$SERVER_LEAKS" "$LOCKSTEP_SERVE" serve "$@" >>"$logf" 2>&1 &
    _PID[$name]=$!
    _PORT[$name]=$port
    _URL[$name]="$scheme://127.0.0.1:$port"
}

await_node() {
    local name=$1 ready=$2 i tries=0 pid
    pid=${_PID[$name]}
    for ((i = 0; i < 300; i++)); do # 15 s
        if ! _alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            _PID[$name]=""
            if ((tries < 3)) && grep -qE 'Address already in use|cannot listen' "$T/$name.log"; then
                tries=$((tries + 1))
                _launch "$name"
                pid=${_PID[$name]}
                continue
            fi
            fail "server $name exited at start: $(grep -v '^=== ' "$T/$name.log" | tail -n 5)"
        fi
        if _listening "$pid" "${_PORT[$name]}" && URL="${_URL[$name]}" eval "$ready"; then
            _server_vars "$name"
            printf -v "PEER_$name" '%s' "$(peer_of "$name")"
            return 0
        fi
        sleep 0.05
    done
    fail "server $name did not answer on ${_URL[$name]} within 15 s"
}
