"""API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, checked against SHA-256 hashes.

The service never holds a key, only ``API_KEYS``: a JSON object of key name -> ``sha256:<hex digest>``
(in the cluster, from a Secret). Several names at once let a key be rotated (add the new one, move the
clients, remove the old one); removing a hash revokes its key. Keys are random 256-bit tokens, so a plain
SHA-256 is enough (nothing to brute-force). ``python -m bff.api_keys new NAME`` prints a new key and its
``API_KEYS`` entry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def identify(presented: str, hashes: dict[str, str]) -> str | None:
    """The name of the key whose hash matches ``presented``, or None. Every hash is compared, in
    constant time each, so the answer's timing tells nothing about which or how much matched."""
    digest = hash_key(presented)
    found = None
    for name, stored in hashes.items():
        if hmac.compare_digest(digest.encode(), stored.encode()):
            found = name
    return found


def new_key() -> str:
    return secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bff.api_keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="print a new key and its API_KEYS entry")
    new.add_argument("name", help="who gets the key (shown in metrics and logs, never the key)")
    args = parser.parse_args(argv)
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"name {args.name!r}: letters, digits, - and _ only")
    key = new_key()
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print(f"API_KEYS entry: {json.dumps({args.name: hash_key(key)})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
