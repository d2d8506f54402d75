#!/usr/bin/env bash
# A real Docker swarm on this one machine: a manager and two workers, each a dockerd of its own in
# a network namespace of its own, joined by a bridge inside a "switch" namespace of the lab's own
# (a bridge on the host would not pass the frames: the host engine's FORWARD DROP applies to
# bridged traffic). The host reaches each engine only through its unix socket; the lab's
# addresses are routed nowhere else (no namespace has a default route).
#
# Usage: scripts/swarm-lab.sh up [PYTHON] | down | status
#   up:   idempotent; creates the Docker contexts bottle-tui-lab (the manager) and
#         bottle-tui-lab-<node> (each node), and loads the bottle images into every node
#         (PYTHON: the project's virtualenv python, whose bottle-tui names the images).
#   down: ends each dockerd by its pidfile, removes the namespaces, links, contexts and data.
# BOTTLE_TUI_LAB_DIR (default /var/lib/bottle-tui-lab) holds each engine's data root, socket and log.
# BOTTLE_TUI_LAB_IMAGES=0 skips loading the images.
set -euo pipefail

lab=${BOTTLE_TUI_LAB_DIR:-/var/lib/bottle-tui-lab}
prefix=bottle-tui-lab
switch=$prefix-switch
nodes=(manager worker1 worker2)
# The lab's own addresses: the link between the namespaces, and the pool of the swarm's overlays.
# Both live only inside the lab's namespaces.
subnet_prefix=10.213.47
addr_pool=10.214.0.0/16
declare -A addr=([manager]=$subnet_prefix.2 [worker1]=$subnet_prefix.3 [worker2]=$subnet_prefix.4)

say() { printf 'swarm-lab: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
ns() { printf '%s-%s' "$prefix" "$1"; }
sock() { printf '%s/%s/docker.sock' "$lab" "$1"; }
node_docker() { local node=$1; shift; docker -H "unix://$(sock "$node")" "$@"; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (network namespaces and dockerd): run it as root"; }

ensure_netns() {
  local name=$1
  ip netns list | awk '{print $1}' | grep -qx "$name" || ip netns add "$name"
  ip -n "$name" link set lo up
}

ensure_network() {
  ensure_netns "$switch"
  ip -n "$switch" link show br0 >/dev/null 2>&1 || ip -n "$switch" link add br0 type bridge
  ip -n "$switch" link set br0 up
  for node in "${nodes[@]}"; do
    ensure_netns "$(ns "$node")"
    if ! ip -n "$switch" link show "v-$node" >/dev/null 2>&1; then
      ip -n "$(ns "$node")" link del eth0 2>/dev/null || true
      ip -n "$switch" link add "v-$node" type veth peer name eth0 netns "$(ns "$node")"
    fi
    ip -n "$switch" link set "v-$node" master br0 up
    ip -n "$(ns "$node")" addr replace "${addr[$node]}/24" dev eth0
    ip -n "$(ns "$node")" link set eth0 up
  done
}

dockerd_running() {
  local pidfile=$lab/$1/docker.pid
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ensure_dockerd() {
  local node=$1 dir=$lab/$1
  mkdir -p "$dir/data" "$dir/exec"
  if dockerd_running "$node" && node_docker "$node" info >/dev/null 2>&1; then return; fi
  # Its own (empty) daemon.json: the host engine's settings are not the lab's.
  [ -f "$dir/daemon.json" ] || echo '{}' > "$dir/daemon.json"
  rm -f "$dir/docker.pid" "$(sock "$node")"
  say "starting the engine of $node (log: $dir/dockerd.log)"
  # nsenter --net, not `ip netns exec` (which remounts /sys and hides the cgroup mounts);
  # unshare --uts gives each node a hostname of its own (the swarm's node name).
  setsid nsenter --net="/run/netns/$(ns "$node")" unshare --uts sh -c \
    'hostname "$1"; shift; exec "$@"' sh "$prefix-$node" \
    dockerd --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$(sock "$node")" \
      --pidfile "$dir/docker.pid" --config-file "$dir/daemon.json" --bridge none \
    >>"$dir/dockerd.log" 2>&1 </dev/null &
}

wait_dockerd() {
  local node=$1
  for _ in $(seq 1 120); do
    node_docker "$node" info >/dev/null 2>&1 && return
    sleep 0.25
  done
  die "the engine of $node did not answer within 30 s; see $lab/$node/dockerd.log"
}

swarm_state() { node_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

ensure_swarm() {
  if [ "$(swarm_state manager)" != active ]; then
    say "swarm init on manager (${addr[manager]})"
    node_docker manager swarm init --advertise-addr "${addr[manager]}" --listen-addr "${addr[manager]}:2377" \
      --default-addr-pool "$addr_pool" --default-addr-pool-mask-length 24 >/dev/null
  fi
  local token
  token=$(node_docker manager swarm join-token -q worker)
  for node in "${nodes[@]:1}"; do
    if [ "$(swarm_state "$node")" != active ]; then
      say "joining $node"
      node_docker "$node" swarm leave --force >/dev/null 2>&1 || true
      node_docker "$node" swarm join --advertise-addr "${addr[$node]}" --listen-addr "${addr[$node]}:2377" \
        --token "$token" "${addr[manager]}:2377" >/dev/null
    fi
  done
}

ensure_context() {
  local name=$1 node=$2
  if docker context inspect "$name" >/dev/null 2>&1; then
    docker context update --docker "host=unix://$(sock "$node")" "$name" >/dev/null 2>&1
  else
    docker context create --description "bottle-tui swarm lab: $node" --docker "host=unix://$(sock "$node")" "$name" >/dev/null 2>&1
  fi
}

# The bottle images (agent, sidecars) on every node, by `docker save | docker load` (no registry
# exists here): only the images some node lacks are saved, once, into the lab folder, and loaded
# in parallel into the nodes that lack one. A load skips the layers a node holds already, so a
# changed sidecars image costs its new layers' load (the save still writes the whole image).
ensure_images() {
  local py=$1 refs missing node archive=$lab/images.tar
  [ "${BOTTLE_TUI_LAB_IMAGES:-1}" = 0 ] && return
  refs=$("$py" -m bottle_tui images refs | cut -f2) || die "cannot name the bottle images (is the virtualenv made? make venv)"
  for ref in $refs; do
    docker image inspect "$ref" >/dev/null 2>&1 || die "image $ref is not on the host engine: run make images first"
  done
  local need=() wanted=()
  for node in "${nodes[@]}"; do
    missing=0
    for ref in $refs; do
      if ! node_docker "$node" image inspect "$ref" >/dev/null 2>&1; then
        missing=1
        [[ " ${wanted[*]} " == *" $ref "* ]] || wanted+=("$ref")
      fi
    done
    [ $missing = 1 ] && need+=("$node")
  done
  [ ${#need[@]} = 0 ] && return
  local t0=$SECONDS
  docker save "${wanted[@]}" -o "$archive.part" && mv "$archive.part" "$archive"
  say "saved ${wanted[*]} in $((SECONDS - t0)) s; loading into ${need[*]}"
  local pids=()
  for node in "${need[@]}"; do
    node_docker "$node" load -q -i "$archive" >"$lab/$node/load.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  rm -f "$archive"
  [ $failed = 0 ] || die "loading the images failed; see $lab/<node>/load.log"
  say "images on ${need[*]} in $((SECONDS - t0)) s"
}

up() {
  need_root "make swarm-lab"
  local py=${1:-python3} t0=$SECONDS
  mkdir -p "$lab"
  chmod 0700 "$lab"
  ensure_network
  for node in "${nodes[@]}"; do ensure_dockerd "$node"; done
  for node in "${nodes[@]}"; do wait_dockerd "$node"; done
  ensure_swarm
  ensure_context "$prefix" manager
  for node in "${nodes[@]}"; do ensure_context "$prefix-$node" "$node"; done
  ensure_images "$py"
  say "ready in $((SECONDS - t0)) s: contexts $prefix (manager), $(printf "$prefix-%s " "${nodes[@]}")"
}

down() {
  need_root "make swarm-lab-down"
  local pids=() pid
  for node in "${nodes[@]}"; do
    local pidfile=$lab/$node/docker.pid
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid"
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  done
  for node in "${nodes[@]}"; do
    docker context rm -f "$prefix-$node" >/dev/null 2>&1 || true
    ip netns del "$(ns "$node")" 2>/dev/null || true
  done
  docker context rm -f "$prefix" >/dev/null 2>&1 || true
  ip netns del "$switch" 2>/dev/null || true  # takes br0 and the switch ends of the veth pairs
  if [ -d "$lab" ]; then
    # The engines' leftover mounts (overlay2, netns bind mounts) go before their folders.
    { grep -F " $lab/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$lab"
  fi
  say "removed"
}

status() {
  for node in "${nodes[@]}"; do
    if dockerd_running "$node"; then
      printf '%s: engine up, swarm %s\n' "$node" "$(swarm_state "$node" || echo '?')"
    else
      printf '%s: engine down\n' "$node"
    fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/swarm-lab.sh up [PYTHON] | down | status" ;;
esac
