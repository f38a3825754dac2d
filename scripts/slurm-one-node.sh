#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (for CI and the tests marked `slurm`).
#
#   export SLURM_CONF="$(scripts/slurm-one-node.sh)"    start it (idempotent) and print its slurm.conf
#   scripts/slurm-one-node.sh stop                      stop the daemons this script started
#
# Needs root and Debian's slurm-wlm + munge (apt-get install -y --no-install-recommends slurm-wlm munge).
# Every SLURM path lives under $LTBENCH_SLURM_DIR (default /tmp/ltbench-slurm); munge uses its standard
# key (/etc/munge/munge.key) and socket directory (/run/munge). Logs go to stderr, the conf path to stdout.
set -euo pipefail

DIR="${LTBENCH_SLURM_DIR:-/tmp/ltbench-slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"

log() { echo "slurm-one-node: $*" >&2; }

stop_pidfile() {  # kill the process recorded in a pid file (only ours), then wait for it to go
  local file="$1" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

if [[ "${1:-start}" == "stop" ]]; then
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  stop_pidfile "$DIR/munged.pid"
  log "stopped (state kept in $DIR)"
  exit 0
fi

for cmd in munged slurmctld slurmd sinfo; do
  command -v "$cmd" >/dev/null || { log "$cmd not found; apt-get install -y slurm-wlm munge"; exit 1; }
done
[[ "$(id -u)" == 0 ]] || { log "must run as root (munge key, daemons)"; exit 1; }

# --- munge ---
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 700 /etc/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  mkdir -p "$DIR"
  runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/munged.pid"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { log "munged does not answer"; exit 1; }
  log "munged started"
fi

# --- slurm.conf (rewritten each time: same content for the same machine) ---
mkdir -p "$DIR/state" "$DIR/spool"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
cat > "$CONF.tmp" <<EOF
ClusterName=ltbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
MinJobAge=600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"
export SLURM_CONF="$CONF"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive "$DIR/slurmctld.pid"; then
  slurmctld -f "$CONF"
  log "slurmctld started"
fi
if ! alive "$DIR/slurmd.pid"; then
  slurmd -f "$CONF"
  log "slurmd started"
fi

for _ in $(seq 60); do
  state="$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)"
  [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]] && break
  sleep 0.5
done
if [[ ! "${state:-}" =~ ^(idle|mix|alloc) ]]; then
  log "node $HOST is not up (sinfo: '${state:-no answer}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
  exit 1
fi
log "node $HOST is $state ($CPUS CPUs, ${MEM_MB} MB); export SLURM_CONF=$CONF"
echo "$CONF"
