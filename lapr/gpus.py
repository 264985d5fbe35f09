"""Pin each GPU job to its own device: `python -m lapr.gpus -- CMD ...`.

Snakemake's `--resources gpu=N` bounds how many GPU jobs run at once but does not say which device
each one gets, so without this every job would land on cuda:0. This wrapper takes a free slot among
the visible devices (an exclusive `fcntl.flock` on `<lockdir>/gpu<i>.lock`, waiting while all are
busy), then `exec`s CMD with `CUDA_VISIBLE_DEVICES=<that device>`. The lock descriptor is inherited
by CMD, so the device stays taken exactly as long as CMD runs: CMD's exit code and signals are its
own, and a killed job (even SIGKILL) frees its device, because the kernel drops the lock with the
last descriptor. With no visible GPU it runs CMD unchanged.

Several small jobs can share a device: `--slots K` (or `$LAPR_GPU_SLOTS`) gives each device K slots
(one lock file each) and a job takes one slot of the device with the most free slots; `--whole`
takes all K slots of one device, for a job that must have the GPU to itself (a benchmark's timings).
Snakemake's `gpu` resource then counts slots: `--resources gpu=<devices x K>`.

Visible devices: `LAPR_GPUS="0,1"` if set (tests, or to hand a run a subset), else
`CUDA_VISIBLE_DEVICES` if set (the ids may be indices or UUIDs), else `range(torch.cuda.device_count())`.
Lock directory: `--lockdir`, else `$LAPR_GPU_LOCKDIR`, else `${TMPDIR:-/tmp}/lapr-gpus-<uid>`: local to
the node, so that every lapr run on one machine shares it whatever its profile, and flock needs no
network file system. Inside a SLURM job the lock names carry the job id, because there the device
ids are the job's own (with cgroup-confined GPUs, every job sees its GPU as 0).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

EX_TEMPFAIL = 75  # sysexits.h: no slot within --timeout; try again later


def _parse(ids: str) -> list[str]:
    """Device ids of a CUDA_VISIBLE_DEVICES-style list; like CUDA, a negative id ends the list."""
    out = []
    for token in (t.strip() for t in ids.split(",")):
        if not token:
            continue
        if token.startswith("-"):
            break
        out.append(token)
    return out


def visible_devices(env: dict | None = None) -> list[str]:
    env = os.environ if env is None else env
    for var in ("LAPR_GPUS", "CUDA_VISIBLE_DEVICES"):
        if var in env:
            return _parse(env[var])
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def default_lockdir(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("LAPR_GPU_LOCKDIR"):
        return Path(env["LAPR_GPU_LOCKDIR"])
    return Path(tempfile.gettempdir()) / f"lapr-gpus-{os.getuid()}"


def _lock_name(device: str, env: dict, slot: int = 0) -> str:
    scope = f"slurm{env['SLURM_JOB_ID']}." if env.get("SLURM_JOB_ID") else ""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
    return f"{scope}gpu{safe}.lock" if slot == 0 else f"{scope}gpu{safe}.slot{slot}.lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire(devices: list[str], lockdir: Path, timeout: float, poll: float = 0.5,
            env: dict | None = None, slots: int = 1, whole: bool = False) -> tuple[str, list[int]] | None:
    """Lock a slot of the device with the most free slots (all `slots` of one device if `whole`);
    returns (device, open descriptors holding the locks), or None after `timeout` seconds without one.
    The descriptors are not closed: the locks live with them."""
    env = os.environ if env is None else env
    lockdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        # take every free slot, then keep what this job needs: probing holds the locks, so two
        # jobs probing at once never both count a slot as theirs (one of them just tries again)
        free = {d: [fd for s in range(slots) if (fd := _try_lock(lockdir / _lock_name(d, env, s))) is not None]
                for d in devices}
        best = max(devices, key=lambda d: len(free[d]))  # first listed among equals
        enough = len(free[best]) == slots if whole else len(free[best]) > 0
        keep = (free[best] if whole else free[best][:1]) if enough else []
        for fd in (fd for d in devices for fd in free[d] if fd not in keep):
            os.close(fd)
        if keep:
            for fd in keep:
                os.ftruncate(fd, 0)  # who holds it, for a human looking at the lock directory
                os.write(fd, f"pid {os.getpid()} host {os.uname().nodename} since {time.ctime()}\n".encode())
            return best, keep
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m lapr.gpus", description=__doc__.splitlines()[0],
                                usage="%(prog)s [--slots K] [--whole] [--lockdir DIR] [--timeout S] [--poll S] -- CMD [ARG ...]")
    p.add_argument("--slots", type=int, default=int(os.environ.get("LAPR_GPU_SLOTS", 1)),
                   help="jobs that may share one device (default: $LAPR_GPU_SLOTS or 1)")
    p.add_argument("--whole", action="store_true", help="take every slot of one device")
    p.add_argument("--lockdir", type=Path, default=None, help="lock files (default: $LAPR_GPU_LOCKDIR "
                   "or ${TMPDIR:-/tmp}/lapr-gpus-<uid>)")
    p.add_argument("--timeout", type=float, default=float(os.environ.get("LAPR_GPU_TIMEOUT", 24 * 3600)),
                   help="seconds to wait for a free device before giving up with exit code 75 "
                        "(default: $LAPR_GPU_TIMEOUT or one day)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between tries while all are busy")
    if "--" not in argv:
        p.error("give the command after `--`")
    split = argv.index("--")
    args, cmd = p.parse_args(argv[:split]), argv[split + 1:]
    if not cmd:
        p.error("no command after `--`")
    if args.slots < 1:
        p.error(f"--slots must be >= 1, got {args.slots}")

    devices = visible_devices()
    env = dict(os.environ)
    if devices:
        lockdir = args.lockdir or default_lockdir()
        got = acquire(devices, lockdir, args.timeout, args.poll, slots=args.slots, whole=args.whole)
        what = "a whole free GPU" if args.whole else "a free GPU slot"
        if got is None:
            print(f"lapr.gpus: no {what[2:]} among {devices} within {args.timeout:g} s (locks in {lockdir})",
                  file=sys.stderr, flush=True)
            return EX_TEMPFAIL
        device, fds = got
        for fd in fds:
            os.set_inheritable(fd, True)  # CMD holds the locks until it exits
        env["CUDA_VISIBLE_DEVICES"] = device
        # the time stamp lets a reader of the logs show which jobs shared or overlapped on a device
        print(f"lapr.gpus: CUDA_VISIBLE_DEVICES={device} ({what} among {','.join(devices)}, "
              f"{len(fds)} of {args.slots} slot(s); at {time.strftime('%Y-%m-%dT%H:%M:%S')}; "
              f"locks in {lockdir})", file=sys.stderr, flush=True)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        print(f"lapr.gpus: cannot run {cmd[0]!r}: {e}", file=sys.stderr, flush=True)
        return 127


if __name__ == "__main__":
    sys.exit(main())
