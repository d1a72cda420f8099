"""Round time of a real federation on this machine: a SuperLink, three `fedshop node`s, `fedshop run`.

Each configuration starts its own processes on localhost and trains the quick generated federation
for a few rounds; the strategy records how long each round's training and evaluation phases took
(``seconds`` in the run record). Measured side by side in one invocation:

- DP + HE over TLS with node authentication (the README's deployment),
- DP + HE over TLS,
- DP + HE without TLS,
- in the clear without DP (no TLS),
- a plain Flower round that only echoes the model (``echo_app``: Flower's default SuperNode, which
  starts one ``flwr-clientapp`` process per message, and a ClientApp that sends the model back
  unchanged; no TLS): the fixed cost of the transport itself,
- the fixed cost a message paid before the node kept its runtime warm: a fresh Python process
  importing the ClientApp (what Flower's ``flwr-clientapp`` does for every message).

Usage: ``python benchmarks/round_time.py [--rounds 3] [--json OUT]``. Prints a table and writes JSON.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedshop.client.data.generate import FederationSpec, write_federation
from fedshop.models.parameters import parameter_count
from fedshop.operations.certificates import CA_FILE, create_certificates
from fedshop.operations.deployment import (
    CONNECTION,
    flower_tool,
    process_environment,
    superlink_command,
    write_connection,
)
from fedshop.operations.node_identity import create_node_keys, register_node
from fedshop.operations.run_driver import superlink_answers
from fedshop.operations.supervisor import stop_process_groups
from fedshop.privacy.ckks import create_keys
from fedshop.rundir.store import RunStore

FEDSHOP = [sys.executable, "-m", "fedshop.cli"]
# name: (DP flag, HE flag, TLS, node authentication); the last is the reference the others are compared with
CONFIGS = {"DP + HE, TLS + node auth": ("--dp", "--he", True, True),
           "DP + HE, TLS": ("--dp", "--he", True, False),
           "DP + HE, no TLS": ("--dp", "--he", False, False),
           "clear, no DP, no TLS": ("--no-dp", "--no-he", False, False)}
ECHO = "plain Flower echo, no TLS"
ECHO_APP = Path(__file__).with_name("echo_app")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if superlink_answers(f"127.0.0.1:{port}"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on {port}")


def _summary(config: str, seconds: list[dict[str, float]], wall: float) -> dict:
    """A configuration's per-round phase times and their medians over the rounds after the first
    (which also waits for the nodes to join)."""
    later = seconds[1:] or seconds
    return {"config": config, "rounds": len(seconds), "wall_s": wall, "per_round": seconds,
            "train_s": statistics.median(s["train"] for s in later),
            "evaluate_s": statistics.median(s["evaluate"] for s in later),
            "round_s": statistics.median(s["train"] + s["evaluate"] for s in later)}


def measure(name: str, work: Path, merchants: list[Path], rounds: int) -> dict:
    """Run one configuration end to end; the per-round phase times from its run record."""
    dp, he, tls, auth = CONFIGS[name]
    out = work / "".join(c for c in name if c.isalnum())
    create_keys(out / "keys")
    certificates = out / "certs"
    create_certificates(certificates, [])
    trust = ["--root-certificate", str(certificates / CA_FILE)] if tls else ["--insecure"]
    port, started = free_port(), []
    with (out / "processes.log").open("w") as logs:

        def launch(command: list[str]) -> subprocess.Popen:
            started.append(subprocess.Popen(command, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=process_environment()))
            return started[-1]

        try:
            launch(superlink_command("127.0.0.1", port, out / "state.db" if auth else None,
                                     certificates if tls else None, node_auth=auth))
            _listening(port)
            for merchant in merchants:
                identity = []
                if auth:
                    key, public = create_node_keys(out / f"key-{merchant.name}", merchant.name)
                    register_node(f"127.0.0.1:{port}", certificates / CA_FILE, public, merchant.name,
                                  out / "registry.json")
                    identity = ["--key", str(key)]
                launch([*FEDSHOP, "node", "--data", str(merchant), "--server", f"127.0.0.1:{port}", "--port",
                        str(free_port()), "--secret-context", str(out / "keys" / "secret.ctx"), "--state-dir",
                        str(out / merchant.name), *trust, *identity,
                        *(["--allow-clear"] if {"--no-dp", "--no-he"} & {dp, he} else [])])
            began = time.monotonic()
            driver = launch([*FEDSHOP, "run", "--server", f"127.0.0.1:{port}", "--out", str(out / "run"),
                             "--rounds", str(rounds), "--min-nodes", str(len(merchants)), dp, he,
                             "--public-context", str(out / "keys" / "public.ctx"), *trust])
            if driver.wait(timeout=1800) != 0:
                raise RuntimeError(f"{name}: the run failed; see {out / 'processes.log'}")
            wall = time.monotonic() - began
        finally:
            stop_process_groups(started, grace_s=20)
    seconds = [record["seconds"] for record in RunStore(out / "run").rounds()]
    return _summary(name, seconds, wall)


def measure_echo(work: Path, merchants: int, rounds: int) -> dict:
    """The echo app's rounds on a plain SuperLink and ``merchants`` default SuperNodes (no TLS)."""
    out, port, started = work / "echo", free_port(), []
    out.mkdir()
    write_connection(out / "flwr-home", f"127.0.0.1:{port}", insecure=True)
    with (out / "processes.log").open("w") as logs:

        def launch(command: list[str]) -> subprocess.Popen:
            started.append(subprocess.Popen(command, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=process_environment(out / "flwr-home")))
            return started[-1]

        try:
            launch(superlink_command("127.0.0.1", port))
            _listening(port)
            for _ in range(merchants):
                launch([flower_tool("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                        "--port", str(free_port())])
            began, result = time.monotonic(), out / "seconds.json"
            pairs = f"rounds={rounds} nodes={merchants} parameters={parameter_count()} out={json.dumps(str(result))}"
            if launch([flower_tool("flwr"), "run", str(ECHO_APP), CONNECTION, "--run-config", pairs]).wait(120):
                raise RuntimeError(f"echo: flwr run failed; see {out / 'processes.log'}")
            while not result.exists():
                if time.monotonic() - began > 1800:
                    raise RuntimeError(f"echo: no result after 30 min; see {out / 'processes.log'}")
                time.sleep(0.5)
            wall = time.monotonic() - began
        finally:
            stop_process_groups(started, grace_s=20)
    seconds = json.loads(result.read_text())
    return _summary(ECHO, seconds, wall)


def cold_start(repeats: int = 3) -> float:
    """Median seconds for a fresh Python process to import the ClientApp."""
    times = []
    for _ in range(repeats):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import fedshop.client.node.app"], check=True, env=process_environment())
        times.append(time.monotonic() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedshop-round-time-") as tmp:
        work = Path(tmp)
        merchants = write_federation(work / "data", FederationSpec.quick())
        results = [measure(name, work, merchants, args.rounds) for name in CONFIGS]
        results.append(measure_echo(work, len(merchants), args.rounds))
    import_s = cold_start()
    table = Table("configuration", "train s", "evaluate s", "round s", "× clear", "× echo", "wall s",
                  title=f"median round after the first, {len(merchants)} merchants, real processes")
    clear, echo = results[-2]["round_s"], results[-1]["round_s"]
    for result in results:
        table.add_row(result["config"], f"{result['train_s']:.1f}", f"{result['evaluate_s']:.1f}",
                      f"{result['round_s']:.1f}", f"{result['round_s'] / clear:.2f}",
                      f"{result['round_s'] / echo:.2f}", f"{result['wall_s']:.0f}")
    console = Console()
    console.print(table)
    console.print(f"a fresh process importing the ClientApp (Flower's per-message cost before the warm runtime): "
                  f"{import_s:.1f} s; each round sends two messages to every node")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "clientapp_import_s": import_s}, indent=2))


if __name__ == "__main__":
    main()
