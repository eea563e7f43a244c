#!/usr/bin/env bash
# Starts a PostgreSQL cluster for the test suite, with TLS, and prints one line for the
# caller to eval:
#   eval "$(scripts/start-postgres.sh)"
#   -> export CLAWY_TEST_POSTGRES_URL='postgres://clawy:…@localhost:54329/postgres?sslmode=verify-full&sslrootcert=…/ca.crt'
#
# Idempotent: creates the cluster "clawytest" (port 54329, 127.0.0.1/::1 only) once,
# a private CA and a server certificate for `localhost`, TLS-only scram-sha-256 access
# for the role `clawy` (CREATEDB, for one fresh database per test), and (re)starts it.
# Runs as root (CI) and uses pg_createcluster/pg_ctlcluster from postgresql-common;
# everything PostgreSQL reads is owned by the postgres user. Only the export line goes
# to stdout; progress goes to stderr.
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "start-postgres: run as root (it manages a cluster owned by the postgres user)" >&2
  exit 1
fi
for tool in pg_createcluster pg_ctlcluster pg_lsclusters openssl runuser; do
  command -v "$tool" >/dev/null || { echo "start-postgres: $tool is missing (scripts/install-deps.sh installs postgresql)" >&2; exit 1; }
done

VERSION="${CLAWY_PG_VERSION:-$(ls /usr/lib/postgresql | sort -V | tail -n1)}"
NAME=clawytest
PORT="${CLAWY_PG_PORT:-54329}"
CONF_DIR="/etc/postgresql/$VERSION/$NAME"
TLS_DIR="/var/lib/postgresql/$NAME-tls"
ROLE=clawy

mkdir -p /var/run/postgresql
chown postgres:postgres /var/run/postgresql
chmod 2775 /var/run/postgresql

if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION $NAME"; then
  log "creating cluster $VERSION/$NAME on port $PORT"
  pg_createcluster "$VERSION" "$NAME" -p "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >&2
fi

# --- TLS: a private CA and a certificate for localhost -------------------------------
mkdir -p "$TLS_DIR"
if [ ! -s "$TLS_DIR/server.crt" ] || [ ! -s "$TLS_DIR/ca.crt" ]; then
  log "creating a test CA and a server certificate for localhost in $TLS_DIR"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" -days 3650 -subj "/CN=Clawy test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > "$TLS_DIR/server.ext"
  openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -out "$TLS_DIR/server.crt" -days 3650 -extfile "$TLS_DIR/server.ext" 2>/dev/null
  rm -f "$TLS_DIR/server.csr"
fi
if [ ! -s "$TLS_DIR/password" ]; then
  openssl rand -hex 24 > "$TLS_DIR/password"
fi
chown -R postgres:postgres "$TLS_DIR"
chmod 700 "$TLS_DIR"
chmod 600 "$TLS_DIR/server.key" "$TLS_DIR/ca.key" "$TLS_DIR/password"
chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
# The test process (root) reads ca.crt; other users would need a copy elsewhere.
PASSWORD="$(cat "$TLS_DIR/password")"

# --- configuration: loopback only, TLS only, fast and disposable ---------------------
mkdir -p "$CONF_DIR/conf.d"
cat > "$CONF_DIR/conf.d/clawytest.conf" <<CONF
listen_addresses = 'localhost'
port = $PORT
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
max_connections = 400
shared_buffers = '128MB'
# A test cluster: durability is not needed, speed is.
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
cat > "$CONF_DIR/pg_hba.conf" <<HBA
# Managed by scripts/start-postgres.sh: local admin by peer, network clients by TLS only.
local   all             postgres                                peer
local   all             all                                     peer
hostssl all             all             127.0.0.1/32            scram-sha-256
hostssl all             all             ::1/128                 scram-sha-256
HBA
chown -R postgres:postgres "$CONF_DIR"

if pg_lsclusters -h | awk -v v="$VERSION" -v n="$NAME" '$1==v && $2==n {print $4}' | grep -q online; then
  # Reload, not restart: other test runs may be connected. (Settings that need a
  # restart — port, listen_addresses, max_connections — were in place at first start.)
  log "cluster running; reloading configuration"
  pg_ctlcluster "$VERSION" "$NAME" reload >&2
else
  log "starting cluster"
  pg_ctlcluster "$VERSION" "$NAME" start >&2
fi

# --- role --------------------------------------------------------------------------
for _ in $(seq 1 50); do
  runuser -u postgres -- psql -p "$PORT" -qAt -c "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.2
done
runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qAt >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB;
  END IF;
END
\$\$;
ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD '$PASSWORD';
SQL

URL="postgres://$ROLE:$PASSWORD@localhost:$PORT/postgres?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt"
# Prove TLS with verification works before handing the URL out.
if ! PGSSLMODE=verify-full PGSSLROOTCERT="$TLS_DIR/ca.crt" PGPASSWORD="$PASSWORD" \
    psql "host=localhost port=$PORT user=$ROLE dbname=postgres" -qAt -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" | grep -qx t; then
  echo "start-postgres: a verify-full TLS connection to the cluster failed" >&2
  exit 1
fi
log "ready on localhost:$PORT (TLS, verify-full)"
echo "export CLAWY_TEST_POSTGRES_URL='$URL'"
