#!/usr/bin/env bash
# Stop the local Ray cluster that cluster/start_local.sh started with the same RAY_TEMP_DIR
# [/tmp/ray-aesthetics], and only that one.
#
# `ray stop` is not used: it stops every Ray process of the machine by name, including other
# clusters and the Ray of a running ray.init() (a test suite, a notebook). This script stops
# the processes that carry the cluster's marker (AESTHETICS_RAY_CLUSTER=<temp dir>, set by
# start_local.sh) or name its temp dir on their command line, and all their descendants
# (workers, job drivers): SIGTERM first, SIGKILL after GRACE_SECONDS [10].
set -euo pipefail

RAY_TEMP_DIR="${RAY_TEMP_DIR:-/tmp/ray-aesthetics}"
if [[ ! -d "$RAY_TEMP_DIR" ]]; then
  echo "no local cluster: $RAY_TEMP_DIR does not exist"
  exit 0
fi
RAY_TEMP_DIR="$(cd "$RAY_TEMP_DIR" && pwd -P)"

RAY_TEMP_DIR="$RAY_TEMP_DIR" GRACE_SECONDS="${GRACE_SECONDS:-10}" python3 - <<'EOF'
import os
import re
import sys

try:
    import psutil
except ImportError:  # Ray ships its own copy
    import importlib.util

    ray_dir = importlib.util.find_spec("ray").submodule_search_locations[0]
    sys.path.insert(0, os.path.join(ray_dir, "thirdparty_files"))
    import psutil

temp_dir = os.environ["RAY_TEMP_DIR"]
grace = float(os.environ["GRACE_SECONDS"])
# The temp dir as a whole path component: /tmp/ray-a must not match /tmp/ray-ab.
named = re.compile(re.escape(temp_dir) + r"(/|$)")
me = psutil.Process()
spared = {me.pid} | {p.pid for p in me.parents()}


def belongs(proc: psutil.Process) -> bool:
    try:
        if any(named.search(arg) for arg in proc.cmdline()):
            return True
        return proc.environ().get("AESTHETICS_RAY_CLUSTER") == temp_dir
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


roots = [p for p in psutil.process_iter() if p.pid not in spared and belongs(p)]
# The whole tree is collected before anything is signalled: a child whose parent dies first
# is re-parented and could not be found any more.
victims = {}
for root in roots:
    victims[root.pid] = root
    try:
        for child in root.children(recursive=True):
            if child.pid not in spared:
                victims[child.pid] = child
    except psutil.NoSuchProcess:
        pass
if not victims:
    print(f"no running Ray processes of the cluster in {temp_dir}")
    sys.exit(0)

procs = list(victims.values())
for proc in procs:
    try:
        proc.terminate()
    except psutil.NoSuchProcess:
        pass
gone, alive = psutil.wait_procs(procs, timeout=grace)
for proc in alive:
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        pass
_, still = psutil.wait_procs(alive, timeout=5)
print(f"stopped the local Ray cluster in {temp_dir}: {len(gone)} processes exited, "
      f"{len(alive)} killed after {grace:g} s")
if still:
    print("still running: " + ", ".join(str(p.pid) for p in still), file=sys.stderr)
    sys.exit(1)
EOF
