#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started: its slurmd, slurmctld and munged (by the pids in the state
# directory, nothing else), and remove the /etc/slurm/slurm.conf symlink it made. Jobs still
# queued are cancelled first. The state directory is left for its logs.
set -uo pipefail
state="${CDLBENCH_SLURM_STATE:-/tmp/cdlbench-slurm}"
[ -f "$state/slurm.conf" ] || exit 0
export SLURM_CONF="$state/slurm.conf"
if [ -f "$state/slurmctld.pid" ]; then timeout 10 scancel --full --quiet --partition debug 2>/dev/null || true; fi
for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munge/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
done
if [ -f "$state/made-etc-link" ]; then
  [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$state/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  rm -f "$state/made-etc-link"
fi
echo "slurm-down: stopped (logs in $state/log)"
