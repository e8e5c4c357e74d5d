#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (CPU only) for tests/slurm: munge, slurmctld, slurmd.
# Needs root and the Debian packages slurm-wlm and munge:
#   apt-get update && apt-get install -y slurm-wlm munge
# Idempotent: a running cluster is left alone. Stop it with tests/slurm/stop_cluster.sh.
# Usage: tests/slurm/start_cluster.sh [STATE_DIR]   (default /tmp/sdsuite-slurm)
set -euo pipefail

STATE=${1:-/tmp/sdsuite-slurm}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
CONF_DIR=/etc/slurm

for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "start_cluster: $tool not found; apt-get install -y slurm-wlm munge" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "start_cluster: run as root (it starts system daemons)" >&2; exit 2; }

if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  echo "start_cluster: a cluster is already up"; sinfo; exit 0
fi

mkdir -p "$STATE"/{ctld,d} /var/log/slurm /run/munge /var/lib/munge /var/log/munge "$CONF_DIR"
# munge: one key, daemon running as root is fine in a throwaway container.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force

# No cgroups in a container: plain process tracking, no task plugin, no accounting daemon.
cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=sdsuite-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=600
MaxArraySize=1000
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
# slurmd refuses to start without a cgroup.conf on some builds even when cgroups are unused.
[ -f "$CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=autodetect" > "$CONF_DIR/cgroup.conf"

slurmctld -i
slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    echo "start_cluster: up"; sinfo; exit 0
  fi
  sleep 1
done
echo "start_cluster: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
