#!/usr/bin/env bash
# Every check and test of the project, on a fresh Debian machine as root or on a developer's.
# Installs what is missing (Debian packages, cargo tools), starts PostgreSQL and Redis on
# loopback when they are not running, then: cargo fmt --check, clippy -D warnings, nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pbx-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

say "Debian packages"
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
command -v sipp >/dev/null || missing+=(sip-tester)   # SIP end-to-end tests
command -v baresip >/dev/null || missing+=(baresip-core)   # the two-phone tone test
[ -x /usr/bin/pebble ] || missing+=(pebble)   # the ACME server the certificate tests issue from
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "all present"
fi
export PBX_TEST_PYTHON=/usr/bin/python3
# The ACME test skips without pebble on a developer's machine, but must run here.
export PBX_TEST_REQUIRE_PEBBLE=1

say "Rust tools"
command -v cargo >/dev/null || { echo "Rust is missing: install it with rustup (https://rustup.rs), then run this again" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
# The S3 server the object-store tests run against (0.15+ needs a newer Rust).
command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --features binary --locked
cargo --version; cargo nextest --version | head -1

say "Python tools"
# Property-based API tests (tests/e2e/schemathesis.rs); 4.x runs on Python 3.9+.
command -v schemathesis >/dev/null || python3 -m pip install -q "schemathesis==4.32.5"
schemathesis --version
export PBX_TEST_REQUIRE_SCHEMATHESIS=1

say "PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  cluster=$(ls /etc/postgresql | sort -V | tail -1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi
pg_isready -h 127.0.0.1 -p 5432
# A password login works whatever the server's auth rules (trust here, scram on stock Debian).
pg_admin() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -q "$@"; else psql -q -h 127.0.0.1 -U postgres "$@"; fi; }
# The role must be a superuser (tests create and drop databases, whoever left them).
if [ "$(PGPASSWORD=pbx_test psql -At -h 127.0.0.1 -U pbx_test -d postgres -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" != t ]; then
  pg_admin -d postgres -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pbx_test') THEN CREATE ROLE pbx_test LOGIN SUPERUSER PASSWORD 'pbx_test'; ELSE ALTER ROLE pbx_test LOGIN SUPERUSER PASSWORD 'pbx_test'; END IF; END\$\$;"
fi
export PBX_TEST_DATABASE_URL="postgres://pbx_test:pbx_test@127.0.0.1:5432/postgres"
# Every run gets fresh databases: drop what an interrupted earlier run left behind.
for db in $(PGPASSWORD=pbx_test psql -At -h 127.0.0.1 -U pbx_test -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'pbx\_t\_%' OR datname LIKE 'pbx\_e2e\_%'"); do
  PGPASSWORD=pbx_test psql -q -h 127.0.0.1 -U pbx_test -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
done

say "Redis"
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping
export PBX_TEST_REDIS_URL="redis://127.0.0.1:6379"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
