#!/usr/bin/env python3
"""Push a file as an OCI artifact with the ORAS Python SDK, as a plugin author would with `oras push`.

    oras-push.py REF FILE [--media-type T] [--config FILE --config-media-type T] [--insecure]

REF is host:port/repository:tag. Without --media-type the ORAS default layer media type is used; without
--config the ORAS default (empty) config. Prints the manifest digest on stdout.
"""
import argparse
import hashlib
import os
import sys

import oras.client


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref")
    ap.add_argument("file")
    ap.add_argument("--media-type", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--config-media-type", default=None)
    ap.add_argument("--insecure", action="store_true", help="plain HTTP (loopback registries)")
    ap.add_argument("--username", default=os.environ.get("ORAS_USERNAME"))
    ap.add_argument("--password", default=os.environ.get("ORAS_PASSWORD"))
    args = ap.parse_args()

    host = args.ref.split("/", 1)[0]
    client = oras.client.OrasClient(hostname=host, insecure=args.insecure)
    if args.username:
        client.login(username=args.username, password=args.password, hostname=host, insecure=args.insecure)

    # ORAS records the path as the layer title; push from the file's directory so the title is its name.
    path = os.path.abspath(args.file)
    cfg = os.path.abspath(args.config) if args.config else None
    os.chdir(os.path.dirname(path))
    name = os.path.basename(path)
    spec = f"{name}:{args.media_type}" if args.media_type else name
    kwargs = {}
    if cfg:
        kwargs["manifest_config"] = f"{cfg}:{args.config_media_type}" if args.config_media_type else cfg
    resp = client.push(target=args.ref, files=[spec], disable_path_validation=True, **kwargs)
    if resp.status_code not in (200, 201):
        print(f"push failed: HTTP {resp.status_code}: {resp.text}", file=sys.stderr)
        return 1
    digest = resp.headers.get("Docker-Content-Digest")
    if not digest:
        print("push succeeded but the registry returned no Docker-Content-Digest", file=sys.stderr)
        return 1
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
