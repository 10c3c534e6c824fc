#!/usr/bin/env bash
# Stop the daemons `.ci/slurm-up.sh` started, by the PIDs in their pid files.
set -u
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
state="$1"
for pid in "$state"/slurmd.pid "$state"/slurmctld.pid; do
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
exit 0
