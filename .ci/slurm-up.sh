#!/usr/bin/env bash
# Start a live single-node Slurm (Debian's slurmctld, slurmd, munge) on this machine, for the
# cluster check (`cargo xtask slurm-check`). Needs root and the Debian package registry.
# Prints the state folder; stop the daemons with `.ci/slurm-down.sh <that folder>`.
# Fails loudly when Slurm cannot be started.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
if ! command -v slurmctld >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
fi
state="${1:-$(mktemp -d /tmp/slurm-ci.XXXXXX)}"
mkdir -p "$state"/{spool,state,log} /run/munge /etc/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged --force
fi
host="$(hostname)"
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmdSpoolDir=$state/spool
StateSaveLocation=$state/state
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=8000 State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld
slurmd
for _ in $(seq 60); do
  if sinfo --noheader --format=%T 2>/dev/null | grep -q idle; then
    echo "$state"
    exit 0
  fi
  sleep 1
done
echo "Slurm did not come up; logs in $state/log" >&2
tail -20 "$state"/log/*.log >&2 || true
exit 1
