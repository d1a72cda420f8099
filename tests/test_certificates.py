"""`fedshop certs init`: a CA and a SuperLink certificate that a node trusts with ca.crt, and only with it."""

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from fedshop.operations.certificates import CA_FILE, SERVER_CERT, SERVER_KEY, create_certificates, trust_problem


def _tls_server(certificates: Path) -> tuple[int, threading.Event]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / SERVER_CERT, certificates / SERVER_KEY)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], stop


def test_the_server_certificate_names_every_address_and_a_node_trusts_only_its_ca(tmp_path: Path) -> None:
    names = create_certificates(tmp_path / "certs", ["shop-federation.example", "10.0.0.7"])
    assert names == ["shop-federation.example", "10.0.0.7", "127.0.0.1", "localhost"]
    certificate = x509.load_pem_x509_certificate((tmp_path / "certs" / SERVER_CERT).read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"shop-federation.example", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.7", "127.0.0.1"}
    assert oct((tmp_path / "certs" / SERVER_KEY).stat().st_mode & 0o777) == "0o600"

    create_certificates(tmp_path / "other", [])
    port, stop = _tls_server(tmp_path / "certs")
    try:
        assert trust_problem(f"127.0.0.1:{port}", tmp_path / "certs" / CA_FILE) == ""
        refused = trust_problem(f"127.0.0.1:{port}", tmp_path / "other" / CA_FILE)
        assert refused.startswith(f"the SuperLink at 127.0.0.1:{port} presented a certificate that the CA in ")
        assert "pass --root-certificate with the federation's ca.crt" in refused
        assert "does not accept" in trust_problem(f"127.0.0.1:{port}", None)
    finally:
        stop.set()
