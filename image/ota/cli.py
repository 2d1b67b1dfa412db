"""``k3py ota``: signing keys, bundles and their inspection on the build host.

``keygen`` writes an Ed25519 key pair; ``bundle`` signs a firmware bundle (the k3py wheel) or a
system bundle (an image's root slot with its block-hash index); ``inspect`` prints a bundle's
manifest and checks its signature (and payload hashes) against a public key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from k3py.errors import UsageError

DEFAULT_KEY = "ota-key.pem"
DEFAULT_PUB = "ota-key.pub"
DEFAULT_CACHE = "/var/cache/k3py/packages"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Over-the-air update bundles: keys, bundles, inspection, upload."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    keygen = actions.add_parser("keygen", help="make an Ed25519 signing key pair")
    keygen.add_argument("--key", default=DEFAULT_KEY, help=f"private key (default {DEFAULT_KEY})")
    keygen.add_argument("--pub", default=DEFAULT_PUB, help=f"public key (default {DEFAULT_PUB})")

    bundle = actions.add_parser("bundle", help="sign a firmware or system bundle")
    what = bundle.add_mutually_exclusive_group(required=True)
    what.add_argument("--firmware", nargs="?", const="", metavar="WHEEL|TREE",
                      help="a firmware bundle of this wheel or source tree (default: the "
                      "firmware 'k3py image build' would install)")  # fmt: skip
    what.add_argument("--from", dest="image", metavar="IMG",
                      help="a system bundle of out/<board>-<role>.img's root slot")  # fmt: skip
    bundle.add_argument("--key", default=DEFAULT_KEY, help="the private signing key")
    bundle.add_argument("--out", "-o", help="bundle file (default: <kind>-<version>.k3pyb)")
    bundle.add_argument("--minimum-version", help="refuse boards running an older version")
    bundle.add_argument("--board", action="append", default=[],
                        help="firmware: a compatible board (repeatable; default any)")  # fmt: skip
    bundle.add_argument("--cache-dir", default=DEFAULT_CACHE, help="wheel build cache")

    push = actions.add_parser("push", help="store a bundle on the server (admin credential)")
    push.add_argument("bundle")
    push.add_argument(
        "--kubeconfig", help="admin kubeconfig (default: $KUBECONFIG, else /etc/k3py/k3py.yaml)"
    )

    inspect = actions.add_parser("inspect", help="print a bundle's manifest, check its signature")
    inspect.add_argument("bundle")
    inspect.add_argument("--pub", default=DEFAULT_PUB, help="the public key to check against")


def run(args: argparse.Namespace) -> int:
    from k3py.cluster.ota import bundle as format_
    from k3py.image.ota import bundler

    if args.action == "keygen":
        ident = bundler.keygen(Path(args.key), Path(args.pub))
        print(f"k3py ota keygen: wrote {args.key} (keep it secret) and {args.pub} (key {ident})")
        print(f"bake the public key into images: k3py image build --ota-key {args.pub} …")
        return 0
    if args.action == "inspect":
        path = Path(args.bundle)
        if not path.exists():
            raise UsageError(f"bundle {path} does not exist")
        manifest = format_.verify(path, format_.load_public_key(Path(args.pub)), None)
        print(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
        print(f"signature: good (key {format_.key_id(format_.load_public_key(Path(args.pub)))});"
              f" payloads: {len(manifest.payloads)} verified")  # fmt: skip
        return 0
    if args.action == "push":
        return _push(Path(args.bundle), args.kubeconfig)
    key = bundler.load_private_key(Path(args.key))
    if args.image is not None:
        image = Path(args.image)
        if not image.exists():
            raise UsageError(f"--from {image} does not exist")
        out = Path(args.out) if args.out else None
        target = out or image.with_suffix(".k3pyb")
        manifest = bundler.system_bundle(target, key, image, minimum_version=args.minimum_version)
    else:
        from k3py.image import firmware

        given = Path(args.firmware) if args.firmware else None
        if given is not None and not given.exists():
            raise UsageError(f"--firmware {given} does not exist")
        cache = Path(args.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        wheel = firmware.firmware_wheel(given, cache).path
        version = bundler.wheel_version(wheel)
        target = Path(args.out) if args.out else Path(f"k3py-firmware-{version}.k3pyb")
        manifest = bundler.firmware_bundle(target, key, wheel, boards=args.board,
                                           minimum_version=args.minimum_version)  # fmt: skip
    size = target.stat().st_size
    print(f"k3py ota bundle: wrote {target} ({manifest.kind} {manifest.version}, "
          f"{manifest.architecture}, {size} bytes)")  # fmt: skip
    return 0


def _push(path: Path, kubeconfig: str | None) -> int:
    """PUT the bundle to the server's store, under the name its manifest gives it."""
    import asyncio
    import os

    import aiohttp

    from k3py.cli import DEFAULT_KUBECONFIG
    from k3py.cluster.client.kubeconfig import read_kubeconfig
    from k3py.cluster.ota.bundle import bundle_name, unverified_manifest
    from k3py.errors import K3pyError

    if not path.exists():
        raise UsageError(f"bundle {path} does not exist")
    name = bundle_name(unverified_manifest(path))
    config = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    creds = read_kubeconfig(Path(config))
    headers = {"Content-Type": "application/x-tar"}
    if creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"

    async def upload() -> tuple[int, str]:
        connector = aiohttp.TCPConnector(ssl=creds.ssl_context or False)
        async with aiohttp.ClientSession(connector=connector) as session:
            with path.open("rb") as body:
                url = f"{creds.server_url.rstrip('/')}/ota/v1/bundles/{name}"
                async with session.put(url, data=body, headers=headers) as response:
                    answer = response.status, await response.text()
        # aiohttp closes TLS transports a moment after the session (its documented pause).
        await asyncio.sleep(0.25)
        return answer

    try:
        code, text = asyncio.run(upload())
    except (aiohttp.ClientError, OSError) as err:
        raise K3pyError(f"cannot reach the server at {creds.server_url}: {err}") from None
    if code != 201:
        try:
            message = json.loads(text).get("message", text)
        except ValueError:
            message = text
        raise K3pyError(f"the server refused {name}: HTTP {code} {message}")
    print(f"k3py ota push: stored {name} ({path.stat().st_size} bytes) on {creds.server_url}")
    return 0
