#!/usr/bin/env bash
# Stop the one-node test cluster started by start_cluster.sh (its own daemons, by pid file).
STATE=${1:-/tmp/sdsuite-slurm}
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
  [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
echo "stop_cluster: stopped slurmd and slurmctld (munged left running)"
