"""Who may join the federation: each merchant's node key, and the operator's registry of them.

Flower's node authentication (``flower-superlink --enable-supernode-auth``, which needs TLS and a
persistent ``--database``) admits only nodes whose public key the operator registered with
``flwr supernode register``; every request a node makes is signed with its private key. fedshop
wraps it: ``fedshop keys node`` makes a merchant's key pair (OpenSSH ECDSA P-384, the format Flower
reads), ``fedshop register`` registers the public key under the merchant's name and keeps the node
id Flower assigned in the operator's registry (a JSON file), and the run record names each merchant
by that registered name rather than by what its node says about itself.
"""

import json
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedshop.core.files import write_secret
from fedshop.operations.deployment import CONNECTION, flower_tool, process_environment, write_connection
from fedshop.server.registry import add_to_registry, read_registry

NODE_KEY, NODE_PUBLIC_KEY = "node.key", "node.pub"


class RegistrationError(RuntimeError):
    """The SuperLink did not register the key; the message says why."""


def create_node_keys(out: Path, merchant: str) -> tuple[Path, Path]:
    """Write a merchant node's private key (kept by the merchant) and public key (for the operator)."""
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / NODE_KEY, out / NODE_PUBLIC_KEY
    write_secret(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                       + f" {merchant}\n".encode())
    return private, public


def register_node(server: str, root_certificate: Path | None, public_key: Path, merchant: str,
                  registry: Path) -> int:
    """Register ``public_key`` with the SuperLink at ``server`` and record its node id as ``merchant``."""
    if not public_key.exists():
        raise RegistrationError(f"{public_key}: no such public key (the merchant makes it with `fedshop keys node`)")
    if merchant in read_registry(registry).values():
        raise RegistrationError(f"merchant {merchant} is already registered in {registry}")
    with tempfile.TemporaryDirectory(prefix="fedshop-flwr-") as home:
        write_connection(Path(home), server, root_certificate)
        done = subprocess.run([flower_tool("flwr"), "supernode", "register", str(public_key), CONNECTION,
                               "--format", "json"], capture_output=True, text=True,
                              env=process_environment(Path(home)))
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise RegistrationError(f"the SuperLink at {server} did not answer the registration: "
                                f"{(done.stdout + done.stderr).strip()[-300:]}") from exc
    if not answer.get("success"):
        raise RegistrationError(f"the SuperLink at {server} refused to register {public_key}: "
                                f"{answer.get('error-message', '').strip().splitlines()[-1]}")
    node = int(answer["node-id"])
    add_to_registry(registry, node, merchant)
    return node
