"""`lapr fetch`: download a hub checkpoint (paper profile) into results/, atomically.

Its own rule, so an offline machine fails here, early, with a clear message, not inside profiling.
"""
from __future__ import annotations

import argparse

from lapr import provenance


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, help="hub id, e.g. fla-hub/delta_net-1.3B-100B")
    p.add_argument("--revision", default=None)
    p.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    with provenance.atomic_dir(args.out) as tmp:
        try:
            snapshot_download(args.repo, revision=args.revision, local_dir=tmp,
                              allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        except LocalEntryNotFoundError as e:
            raise ConnectionError(f"cannot download {args.repo}: no network or hub access ({e}). "
                                  "Offline machines use the embedded profile, or set source: local "
                                  "with a path to a downloaded checkpoint.") from e
        provenance.write_json(tmp / "fetch.json", provenance.record({"repo": args.repo,
                                                                    "revision": args.revision}))
    print(f"{args.repo} -> {args.out}")
