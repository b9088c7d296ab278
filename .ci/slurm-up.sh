#!/usr/bin/env bash
# Bring up a real single-node Slurm on this machine (root, Debian/Ubuntu), for the Slurm tests
# (tests/run/test_slurm.py): munged, slurmctld and slurmd with partition `debug` on this host.
#
# - installs `slurm-wlm` and `munge` with apt-get when slurmctld is missing;
# - everything it writes lives under the state directory ($CDLBENCH_SLURM_STATE, default
#   /tmp/cdlbench-slurm): slurm.conf, gres.conf, the munge key and socket, spool, logs, pid files;
#   the one file outside it is /etc/slurm/slurm.conf, a symlink to the state directory's file
#   (so sbatch, squeue, scontrol find the cluster), made only when no slurm.conf exists there;
# - no cgroups (proctrack/linuxproc, task/none): it runs inside a container;
# - no accounting: slurmdbd needs a MySQL/MariaDB server, too heavy for CI, so `sacct` is not
#   available, the case the executor must handle (it watches squeue, not sacct);
# - a fake GPU type (gres gpu:tiny, no device file) and a node feature `ci`, so tests can see
#   --slurm-gpu-type and --slurm-constraint accepted by the scheduler;
# - waits (at most 60 s) until `sinfo` shows the node idle; .ci/slurm-down.sh stops what this
#   started (the pids it recorded) and removes the symlink.
# If a Slurm already answers (`sinfo` works), nothing is started.
set -euo pipefail
state="${CDLBENCH_SLURM_STATE:-/tmp/cdlbench-slurm}"

if command -v sinfo > /dev/null && timeout 10 sinfo -h > /dev/null 2>&1; then
  echo "slurm-up: a Slurm already answers (sinfo); starting nothing"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "slurm-up: needs root (installs packages, starts daemons)" >&2; exit 1; fi
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show slurm-wlm > /dev/null 2>&1; then apt-get update -q; fi
  apt-get install -y -q --no-install-recommends slurm-wlm munge > "${TMPDIR:-/tmp}/cdlbench-slurm-apt.log" 2>&1 || {
    tail -20 "${TMPDIR:-/tmp}/cdlbench-slurm-apt.log" >&2; exit 1; }
fi

host="$(hostname -s)"
mkdir -p "$state"/{ctld,spool,log,munge}
chmod 0755 "$state"
chmod 0700 "$state/munge"
# the node line as slurmd sees this machine (CPUs, sockets, cores, memory)
node="$(slurmd -C | head -1)"
node="${node#NodeName=* }"

[ -f "$state/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$state/munge/munge.key"; }
chmod 0400 "$state/munge/munge.key"

cat > "$state/slurm.conf" <<EOF
# written by .ci/slurm-up.sh (cdlbench CI): a single-node cluster for the tests
ClusterName=cdlbench
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
GresTypes=gpu
NodeName=$host $node Gres=gpu:tiny:1 Feature=ci State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
# a GPU type without a device: lets --gres=gpu:tiny:N be scheduled on a CPU machine (slurmd reads
# gres.conf beside its slurm.conf)
cat > "$state/gres.conf" <<EOF
NodeName=$host Name=gpu Type=tiny File=/dev/null
EOF

mkdir -p /etc/slurm
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$state/slurm.conf" ]; then
  :
elif [ -L /etc/slurm/slurm.conf ] && { [ ! -e /etc/slurm/slurm.conf ] || head -1 /etc/slurm/slurm.conf | grep -q '^# written by .ci/slurm-up.sh'; }; then
  # left by an earlier slurm-up.sh whose cluster is gone (sinfo did not answer above): ours to replace
  ln -sfn "$state/slurm.conf" /etc/slurm/slurm.conf
  touch "$state/made-etc-link"
elif [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  echo "slurm-up: /etc/slurm/slurm.conf exists and is not ours; export SLURM_CONF=$state/slurm.conf to use this cluster" >&2
else
  ln -s "$state/slurm.conf" /etc/slurm/slurm.conf
  touch "$state/made-etc-link"
fi
export SLURM_CONF="$state/slurm.conf"

munged --force --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
  --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed"
slurmctld -c -f "$state/slurm.conf"    # -c: a fresh cluster, no state from an earlier one
slurmd -f "$state/slurm.conf"

for _ in $(seq 1 60); do
  node_state="$(sinfo -h -N -o '%T' 2>/dev/null || true)"
  if [ "$node_state" = idle ]; then
    echo "slurm-up: node $host idle in partition debug (state in $state)"
    exit 0
  fi
  case "$node_state" in inval*|drain*) break ;; esac
  sleep 1
done
echo "slurm-up: the node is not idle (${node_state:-no answer}); logs in $state/log" >&2
sinfo -N -l >&2 || true
tail -n 20 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 || true
"$(dirname "$0")/slurm-down.sh" || true
exit 1
