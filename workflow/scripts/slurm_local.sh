#!/usr/bin/env bash
# A throwaway single-node SLURM cluster (munged + slurmctld + slurmd) for tests of the SLURM profile.
#
#   slurm_local.sh start  [DIR]   write DIR/slurm.conf, start the daemons, wait until the node is idle
#   slurm_local.sh stop   [DIR]   cancel this cluster's jobs, stop exactly the daemons started in DIR
#   slurm_local.sh status [DIR]   exit 0 when all three daemons of DIR are running
#
# DIR defaults to $LAPR_SLURM_DIR. Every file (config, munge key and socket, state, spool, logs, pid
# files) lives in DIR; nothing else on the machine is touched, apart from starting the daemons.
# Clients use the cluster with `export PATH=DIR/bin:$PATH SLURM_CONF=DIR/slurm.conf`: DIR/bin holds
# wrappers of the client commands that set SLURM_CONF themselves, because the Snakemake SLURM plugin's
# job step drops every SLURM_* variable before its nested `srun`. Needs root (the daemons run as
# root), Debian's slurm-wlm and munge. Ports: $LAPR_SLURMCTLD_PORT (6817) and $LAPR_SLURMD_PORT (6818).
# Both commands are safe to repeat: start leaves running daemons alone, stop ignores stopped ones.
set -euo pipefail

cmd=${1:-}
dir=${2:-${LAPR_SLURM_DIR:-}}
if [[ -z "$cmd" || -z "$dir" ]]; then
    echo "usage: $0 start|stop|status DIR   (or set LAPR_SLURM_DIR)" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export SLURM_CONF="$dir/slurm.conf"
ctld_port=${LAPR_SLURMCTLD_PORT:-6817}
slurmd_port=${LAPR_SLURMD_PORT:-6818}

log() { echo "slurm_local: $*" >&2; }

# A pid file's process, if it is alive and is the daemon started from this DIR (guards against a
# recycled pid): its command line must name the daemon and this directory.
alive() {
    local name=$1 pidfile="$dir/$1.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- "$name.*$dir" || return 1
    echo "$pid"
}

write_conf() {
    local node cpus mem
    node=$(hostname -s)
    cpus=$(slurmd -C | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p')
    # Memory is not enforced (no cgroups); declaring at least 64 GB (with config_overrides) lets the
    # profile's per-rule --mem requests be admitted on small CI machines too.
    ((mem < 65536)) && mem=65536
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    : >"$dir/plugstack.conf"
    cat >"$dir/slurm.conf.tmp" <<EOF
# written by workflow/scripts/slurm_local.sh: a local test cluster, everything under $dir
ClusterName=lapr-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
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
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
    write_wrappers
}

# DIR/bin/<client>: runs the real client (found on PATH outside DIR/bin) with this cluster's config.
write_wrappers() {
    local tool real p
    mkdir -p "$dir/bin"
    for tool in sbatch srun squeue scancel sinfo scontrol sacct; do
        real=""
        IFS=: read -ra paths <<<"$PATH"
        for p in "${paths[@]}"; do
            [[ "$p" != "$dir/bin" && -x "$p/$tool" ]] && { real="$p/$tool"; break; }
        done
        [[ -n "$real" ]] || continue
        printf '#!/bin/sh\nexport SLURM_CONF=%q\nexec %q "$@"\n' "$dir/slurm.conf" "$real" >"$dir/bin/$tool"
        chmod +x "$dir/bin/$tool"
    done
}

start() {
    local need=0 d
    for d in munged slurmctld slurmd; do alive "$d" >/dev/null || need=1; done
    if ((need)); then
        stop_daemons  # a partial cluster (one daemon died): restart it cleanly
        write_conf
        [[ -s "$dir/munge.key" ]] || { mungekey -c -k "$dir/munge.key" && chmod 600 "$dir/munge.key"; }
        munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
            --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"
        slurmctld -c -f "$dir/slurm.conf"
        slurmd -f "$dir/slurm.conf" -N "$(hostname -s)"
    fi
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
        case "$state" in
            idle | mix | alloc) log "up: node $state, SLURM_CONF=$SLURM_CONF"; return 0 ;;
        esac
        sleep 0.5
    done
    log "node not idle after 60 s (state '${state}'); logs in $dir/log"
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
}

stop_daemons() {
    local d pid
    for d in slurmd slurmctld munged; do
        pid=$(alive "$d") || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    done
}

stop() {
    if alive slurmctld >/dev/null; then
        scancel --full --quiet --partition=local 2>/dev/null || true  # this cluster's jobs only
        for _ in $(seq 30); do
            [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
    stop_daemons
    log "stopped (files kept in $dir)"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) for d in munged slurmctld slurmd; do alive "$d" >/dev/null || exit 1; done ;;
    *) echo "unknown command '$cmd' (start|stop|status)" >&2; exit 2 ;;
esac
