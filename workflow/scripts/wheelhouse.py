"""Build a wheelhouse of lapr's dependencies (Snakemake included) for a machine without a package index.

GPU nodes of clusters and air-gapped machines often cannot reach PyPI. Run this where pip works; it
resolves lapr's whole dependency closure for the TARGET's Python and platform (not this machine's),
leaves out what the target already has, and downloads the rest as wheels:

    python workflow/scripts/wheelhouse.py --out wheelhouse --python 3.12 \
        --platform manylinux_2_28_x86_64 --have target-freeze.txt

`--have` takes the target's `python -m pip freeze` (or a list of names, one per line): those
distributions are skipped by name, so torch, triton and CUDA libraries are neither fetched nor
replaced (a wheelhouse for a bare target leaves `--have` out and gets everything, torch included).
`--skip NAME` drops more by name. The folder gets the wheels and `requirements.txt` pinning them.
On the target, from the repo root:

    python -m pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt
    python -m pip install --no-index --no-deps --no-build-isolation -e .

Resolution is pip's own (`pip install --dry-run --report`), with `--only-binary=:all:` so that the
target never compiles anything.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# manylinux tags pip matches exactly: list the common ones so that any wheel a glibc >= 2.17 target
# can load is found
MANYLINUX = ["manylinux_2_{}_x86_64".format(n) for n in (39, 35, 34, 31, 28, 27, 24, 17)] + [
    "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: Path) -> set[str]:
    """Distribution names from a `pip freeze` file or a list of names (comments and blanks skipped)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonical(re.split(r"[=<>!~ @\[;]", line, maxsplit=1)[0]))
    return names


def platform_args(python: str, platforms: list[str]) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in platforms:
        args += ["--platform", p]
    return args


def resolve(spec: str, target: list[str], out: Path) -> list[dict]:
    """pip's report of every distribution it would install for `spec` on the target.

    A dependency published only as a source distribution (lm-eval's sqlitedict, for one) has no wheel
    to match the target's tags: it is built here into `out` (`pip wheel`; such packages are pure
    Python, so the wheel suits any target) and resolution is retried with `out` as a package source.
    """
    built: set[str] = set()
    while True:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--target", str(Path(tmp) / "site"), "--report", str(report), "--find-links", str(out),
                   *target, spec]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode == 0:
                return json.loads(report.read_text())["install"]
        # pip names such a package either directly or as the dependency it cannot satisfy
        names = re.findall(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", run.stderr + run.stdout) or \
            re.findall(r" depends on ([A-Za-z0-9_.\-]+)", run.stderr + run.stdout)
        todo = sorted({canonical(n) for n in names} - built)
        if not todo:
            sys.stderr.write(run.stderr + run.stdout)
            raise SystemExit(f"wheelhouse: pip could not resolve {spec} for the target (above)")
        for name in todo:
            print(f"wheelhouse: {name} has no wheel for the target; building one here", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), name],
                           check=True)
            built.add(name)


def needed(install: list[dict], skip: set[str]) -> list[tuple[str, str]]:
    """(name, version) of the distributions lapr reaches without passing through a skipped one: the
    target's torch brings its own CUDA libraries, so torch's dependencies are not fetched either."""
    meta = {canonical(i["metadata"]["name"]): i["metadata"] for i in install}
    seen, todo = set(), ["lapr"]
    while todo:
        name = todo.pop()
        if name in seen or name not in meta or (name in skip and name != "lapr"):
            continue
        seen.add(name)
        for req in meta[name].get("requires_dist") or []:
            todo.append(canonical(re.split(r"[=<>!~ @\[;(]", req, maxsplit=1)[0]))
    seen.discard("lapr")
    return sorted((n, meta[n]["version"]) for n in seen)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="wheelhouse folder (created)")
    p.add_argument("--python", default="3.12", help="target Python version (default 3.12)")
    p.add_argument("--platform", action="append", default=None,
                   help="target platform tag(s); default: the manylinux x86_64 family")
    p.add_argument("--extras", default="", help="lapr extras to include, e.g. 'slurm'")
    p.add_argument("--have", type=Path, help="the target's `pip freeze`: skip these names")
    p.add_argument("--skip", action="append", default=[], help="another name to skip (repeatable)")
    args = p.parse_args(argv)

    target = platform_args(args.python, args.platform or MANYLINUX)
    spec = f"{ROOT}[{args.extras}]" if args.extras else str(ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    install = resolve(spec, target, args.out)
    skip = (read_have(args.have) if args.have else set()) | {canonical(s) for s in args.skip}
    wanted = needed(install, skip)
    print(f"wheelhouse: {len(install) - 1} distributions in lapr's closure, {len(wanted)} to fetch (the "
          "others are skipped, or needed only by skipped ones)", file=sys.stderr)

    pins = [f"{n}=={v}" for n, v in wanted]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(args.out),
                    "--find-links", str(args.out), *target, *pins], check=True)
    for wheel in args.out.glob("*.whl"):  # wheels built for skipped names, or left by an earlier run
        if canonical(wheel.name.split("-")[0]) not in {n for n, _ in wanted}:
            wheel.unlink()
    (args.out / "requirements.txt").write_text("".join(f"{pin}\n" for pin in pins))
    size = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    print(f"wheelhouse: {len(pins)} wheels, {size / 2**20:.1f} MiB in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
