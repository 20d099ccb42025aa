# Shared by scripts/test, scripts/bench and scripts/up: make sure PostgreSQL and NATS JetStream are
# reachable on this machine, starting them with the machine's usual commands, or installing them
# from Debian packages when absent. Sourced, not run.

: "${CAIRN_PG_HOST:=127.0.0.1}"
: "${CAIRN_PG_PORT:=5432}"
: "${CAIRN_NATS_PORT:=4222}"
: "${CAIRN_TEST_DATABASE_URL:=postgres://postgres@${CAIRN_PG_HOST}:${CAIRN_PG_PORT}/postgres}"
export CAIRN_TEST_DATABASE_URL
# Build outside the clone so a fresh clone does not rebuild every dependency.
: "${CARGO_TARGET_DIR:=$HOME/.cache/cairn/target}"
export CARGO_TARGET_DIR

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Waits (bounded) until a TCP port accepts connections.
wait_port() {
  local host=$1 port=$2 what=$3 i
  for i in $(seq 1 100); do
    port_open "$host" "$port" && return 0
    sleep 0.2 # poll_interval while a server starts
  done
  die "$what did not start listening on $host:$port"
}

apt_install() {
  command -v apt-get >/dev/null || die "cannot install $*: no apt-get; install it yourself"
  log "installing $* from Debian packages"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  port_open "$CAIRN_PG_HOST" "$CAIRN_PG_PORT" && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main start
  wait_port "$CAIRN_PG_HOST" "$CAIRN_PG_PORT" PostgreSQL
  # Trust local TCP connections for the postgres user, as the machine's own cluster does.
  if ! psql "$CAIRN_TEST_DATABASE_URL" -Atc 'select 1' >/dev/null 2>&1; then
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    log "allowing trust auth on 127.0.0.1 in $hba"
    sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\)\S\+/\1trust/' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null \
      || pg_ctlcluster "$version" main reload
  fi
}

ensure_nats() {
  port_open 127.0.0.1 "$CAIRN_NATS_PORT" && return 0
  command -v nats-server >/dev/null || apt_install nats-server
  local store=/var/lib/nats-server
  mkdir -p "$store" 2>/dev/null || store="${TMPDIR:-/tmp}/cairn-nats"
  mkdir -p "$store"
  log "starting NATS with JetStream (store $store)"
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p "$CAIRN_NATS_PORT" -js -sd "$store" -l "${store}/nats-server.log" 2>/dev/null \
    || (nohup nats-server -a 127.0.0.1 -p "$CAIRN_NATS_PORT" -js -sd "$store" >"$store/nats-server.log" 2>&1 &)
  wait_port 127.0.0.1 "$CAIRN_NATS_PORT" NATS
}

ensure_psql() {
  command -v psql >/dev/null || apt_install postgresql-client
}

# Python tools the tests drive as external clients and servers: scim2-cli (the scim2-tester
# conformance suite), aiosmtpd (a real SMTP server), grpcio and grpcio-tools (a gRPC client in
# another language, with stubs generated from proto/ at test time), nats-py (reads a JetStream
# stream back in scripts/chaos), standardwebhooks (verifies the actions service's signatures in
# the webhook receiver of its tests, chaos run and benchmark). Installed once into a virtual environment
# under the cache directory; exports CAIRN_TEST_PYTHON and CAIRN_TEST_SCIM2.
ensure_python_tools() {
  local venv="${CAIRN_VENV:-$HOME/.cache/cairn/venv}"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating a Python virtual environment in $venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  if ! "$venv/bin/python" -c 'import aiosmtpd, scim2_cli, grpc, grpc_tools, nats, standardwebhooks' >/dev/null 2>&1; then
    log "installing scim2-cli, aiosmtpd, grpcio, grpcio-tools, nats-py and standardwebhooks into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check scim2-cli aiosmtpd grpcio grpcio-tools nats-py standardwebhooks
  fi
  export CAIRN_TEST_PYTHON="$venv/bin/python"
  export CAIRN_TEST_SCIM2="$venv/bin/scim2"
}

# Tools scripts/check-compose uses to validate docker-compose.yml without a Docker engine:
# docker-compose 1.29 from Debian's package (`docker-compose config -q`; without the recommended
# docker.io engine), and, in the tests' virtual environment, check-jsonschema (which ships the
# Compose Specification's JSON schema, so nothing is fetched at check time) and PyYAML. Exports
# CAIRN_COMPOSE_PYTHON and CAIRN_CHECK_JSONSCHEMA.
ensure_compose_tools() {
  local venv="${CAIRN_VENV:-$HOME/.cache/cairn/venv}"
  if ! command -v docker-compose >/dev/null; then
    command -v apt-get >/dev/null || die "cannot install docker-compose: no apt-get; install it yourself"
    log "installing docker-compose from Debian packages (to validate docker-compose.yml)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating a Python virtual environment in $venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1 \
    || [ "$("$venv/bin/check-jsonschema" --version 2>/dev/null)" != "check-jsonschema, version 0.39.0" ]; then
    log "installing check-jsonschema and PyYAML into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'check-jsonschema==0.39.0' 'PyYAML>=6'
  fi
  export CAIRN_COMPOSE_PYTHON="$venv/bin/python"
  export CAIRN_CHECK_JSONSCHEMA="$venv/bin/check-jsonschema"
}

# Debian's Chromium, for the operator console's browser test (headless `--dump-dom` and
# `--screenshot`). Installed on demand; exports CAIRN_TEST_CHROMIUM.
ensure_chromium() {
  local chromium="${CAIRN_TEST_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$chromium" ]; then
    apt_install chromium
    chromium=/usr/bin/chromium
  fi
  [ -x "$chromium" ] || die "chromium is not at $chromium after installing it"
  export CAIRN_TEST_CHROMIUM="$chromium"
}
