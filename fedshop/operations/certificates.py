"""TLS for the federation: the operator's certificate authority and the SuperLink's certificate.

``fedshop certs init`` makes a CA (``ca.crt``, ``ca.key``) and a server certificate signed by it
(``server.pem``, ``server.key``) whose subject alternative names hold every address nodes use to reach
the SuperLink, plus 127.0.0.1 and localhost (Flower's own processes on the server machine connect
there). The operator starts ``fedshop server --certificates DIR``; merchants and ``fedshop run`` get
only ``ca.crt``. :func:`trust_problem` is the one-line check a node makes before it joins.
"""

import datetime
import hashlib
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedshop.core.files import write_secret

CA_FILE, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
ALWAYS = ("127.0.0.1", "localhost")
CA_DAYS, SERVER_DAYS = 3650, 825


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedshop"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_secret(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def create_certificates(out: Path, hosts: list[str]) -> list[str]:
    """Write a CA and a server certificate for ``hosts`` (and 127.0.0.1, localhost) into ``out``;
    returns the names the server certificate is valid for."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([*hosts, *ALWAYS]))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedshop federation CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
              .add_extension(x509.SubjectAlternativeName([_san(host) for host in names]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA384()))
    (out / CA_FILE).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(out / CA_KEY, ca_key)
    (out / SERVER_CERT).write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(out / SERVER_KEY, server_key)
    return names


def trust_problem(server: str, root_certificate: Path | None, timeout: float = 5.0) -> str:
    """Why this node would not trust the SuperLink at ``server`` (HOST:PORT), or "" when the TLS
    handshake succeeds with ``root_certificate`` (the system's trust store without one) or when the
    SuperLink does not answer yet (the node waits for it)."""
    host, _, port = server.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    context = ssl.create_default_context(cafile=str(root_certificate) if root_certificate else None)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return ""
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in {root_certificate}" if root_certificate else "the system's trust store"
        return (f"the SuperLink at {server} presented a certificate that {trusted} does not accept "
                f"({exc.verify_message}); pass --root-certificate with the federation's {CA_FILE}")
    except ssl.SSLError as exc:
        return f"no TLS handshake with the SuperLink at {server} ({exc.reason}); is it started with TLS?"
    except OSError:
        return ""


def transport_used(root_certificate: Path | None, insecure: bool) -> str:
    """How a connection to the SuperLink is secured, in words for the run record and the report."""
    if insecure:
        return "no TLS (--insecure)"
    if root_certificate is None:
        return "TLS, the server's certificate checked against the system's trust store"
    digest = hashlib.sha256(root_certificate.read_bytes()).hexdigest()
    return f"TLS, the server's certificate checked against the federation's CA (ca.crt SHA-256 {digest})"
