# PostgreSQL, MariaDB, Redis and NATS (JetStream) come from Debian's packages on this machine
# kind; start any that is not running, with the same commands the machine uses at boot.
wait_port() { # host port name
  for _ in $(seq 1 60); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && { exec 3>&- 3<&-; return 0; }
    sleep 0.5
  done
  echo "$3 did not come up on $1:$2" >&2
  return 1
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }

if ! port_open 127.0.0.1 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! port_open 127.0.0.1 3306 && [ -x /usr/sbin/mariadbd ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
if ! port_open 127.0.0.1 6379 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! port_open 127.0.0.1 4222 && [ -x /usr/sbin/nats-server ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
wait_port 127.0.0.1 5432 PostgreSQL
wait_port 127.0.0.1 3306 MariaDB
wait_port 127.0.0.1 6379 Redis
wait_port 127.0.0.1 4222 NATS
export LARDER_TEST_POSTGRES_URL="${LARDER_TEST_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}"
export LARDER_TEST_MYSQL_URL="${LARDER_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
export LARDER_TEST_REDIS_URL="${LARDER_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"
export LARDER_TEST_NATS_URL="${LARDER_TEST_NATS_URL:-nats://127.0.0.1:4222}"
