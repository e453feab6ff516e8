#!/usr/bin/env python3
"""Sign a plugin already in a registry the way `cosign sign --key` does, independently of millrace's code.

    cosign-sign.py --registry HOST:PORT --repository REPO --digest sha256:HEX --key PRIVATE.pem
                   [--insecure] [--username U --password P]
    cosign-sign.py --generate-key OUT-PREFIX        # writes OUT-PREFIX.key (PKCS#8) and OUT-PREFIX.pub (SPKI)

It uses only the `cryptography` library and the ORAS Python SDK (and `requests`, which that SDK is built on), so that millrace's verifier is checked against an
implementation it shares nothing with. The signature is Sigstore "simple signing" as cosign stores it: the payload
`{"critical":{"identity":{"docker-reference":HOST:PORT/REPO},"image":{"docker-manifest-digest":DIGEST},
"type":"cosign container image signature"},"optional":null}` is signed with ECDSA P-256 / SHA-256 (DER), and an
OCI image manifest whose one layer (`application/vnd.dev.cosign.simplesigning.v1+json`) is that payload, with the
base64 signature in the layer annotation `dev.cosignproject.cosign/signature`, is pushed to the tag
`sha256-HEX.sig` of the same repository. The key must be an unencrypted PKCS#8 or SEC1 PEM EC P-256 key (cosign's
own encrypted `cosign.key` format is not read). Prints the signature manifest's digest on stdout.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile

import oras.client
import oras.oci
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def payload(docker_reference: str, digest: str) -> bytes:
    """The simple-signing payload, compact, keys in cosign's order."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def config(payload_bytes: bytes) -> bytes:
    """The small image config cosign (go-containerregistry) writes for a signature image."""
    diff_id = "sha256:" + hashlib.sha256(payload_bytes).hexdigest()
    doc = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def generate_key(prefix: str) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(prefix + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    with open(prefix + ".pub", "wb") as f:
        f.write(public)
    print(f"wrote {prefix}.key and {prefix}.pub", file=sys.stderr)
    return 0


def load_key(path: str) -> ec.EllipticCurvePrivateKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SystemExit(f"{path}: not an EC P-256 private key")
    return key


def sign(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", args.digest):
        print(f"--digest must be sha256:<64 lowercase hex>, got {args.digest!r}", file=sys.stderr)
        return 2
    key = load_key(args.key)
    body = payload(f"{args.registry}/{args.repository}", args.digest)
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    tag = args.digest.replace(":", "-", 1) + ".sig"
    target = f"{args.registry}/{args.repository}:{tag}"

    backend = "token"
    if args.username:
        # The SDK's default backend only speaks bearer tokens; a registry that challenges for Basic (htpasswd)
        # needs the basic backend.
        scheme = "http" if args.insecure else "https"
        probe = requests.get(f"{scheme}://{args.registry}/v2/", timeout=30)
        if probe.headers.get("Www-Authenticate", "").lower().startswith("basic"):
            backend = "basic"
    client = oras.client.OrasClient(hostname=args.registry, insecure=args.insecure, auth_backend=backend)
    if args.username:
        # Basic credentials for this client only: `login()` would also write them to ~/.docker/config.json.
        client.auth.set_basic_auth(args.username, args.password or "")
    container = client.get_container(target)

    with tempfile.TemporaryDirectory() as tmp:
        payload_path = os.path.join(tmp, "payload.json")
        config_path = os.path.join(tmp, "config.json")
        with open(payload_path, "wb") as f:
            f.write(body)
        with open(config_path, "wb") as f:
            f.write(config(body))

        layer = oras.oci.NewLayer(payload_path, media_type=PAYLOAD_TYPE)
        layer["annotations"] = {SIGNATURE_ANNOTATION: signature}
        conf, _ = oras.oci.ManifestConfig(config_path, media_type=CONFIG_TYPE)
        for path, desc in ((config_path, conf), (payload_path, layer)):
            resp = client.upload_blob(path, container, desc)
            if resp.status_code not in (200, 201, 202):
                print(f"blob upload failed: HTTP {resp.status_code}: {resp.text}", file=sys.stderr)
                return 1

    manifest = oras.oci.NewManifest()
    manifest["config"] = conf
    manifest["layers"] = [layer]
    manifest.pop("annotations", None)
    resp = client.upload_manifest(manifest, container)
    if resp.status_code not in (200, 201):
        print(f"manifest push failed: HTTP {resp.status_code}: {resp.text}", file=sys.stderr)
        return 1
    digest = resp.headers.get("Docker-Content-Digest")
    if not digest:
        print("push succeeded but the registry returned no Docker-Content-Digest", file=sys.stderr)
        return 1
    print(digest)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generate-key", metavar="OUT_PREFIX", help="write OUT_PREFIX.key and OUT_PREFIX.pub, then exit")
    ap.add_argument("--registry", help="host:port")
    ap.add_argument("--repository")
    ap.add_argument("--digest", help="manifest digest to sign, sha256:<hex>")
    ap.add_argument("--key", help="unencrypted PEM EC P-256 private key")
    ap.add_argument("--insecure", action="store_true", help="plain HTTP (loopback registries)")
    ap.add_argument("--username", default=os.environ.get("ORAS_USERNAME"))
    ap.add_argument("--password", default=os.environ.get("ORAS_PASSWORD"))
    args = ap.parse_args()
    if args.generate_key:
        return generate_key(args.generate_key)
    missing = [o for o in ("registry", "repository", "digest", "key") if not getattr(args, o)]
    if missing:
        ap.error("missing " + ", ".join("--" + m for m in missing))
    try:
        return sign(args)
    except (requests.RequestException, ValueError) as e:  # the SDK raises ValueError on refused uploads
        print(f"signing {args.registry}/{args.repository}@{args.digest} failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
