"""``fedmeta certs``: the CA, the SuperLink certificate and SuperNode keys a secure deployment needs
(used end to end by ``tests/test_deployment.py``)."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from cryptography.hazmat.primitives.serialization.ssh import load_ssh_public_key

from fedmeta.cli import main


def test_credentials_as_flower_reads_them(tmp_path, capsys):
    out = tmp_path / "tls"
    assert main(["certs", str(out), "--host", "10.1.2.3", "--host", "link.lab", "--nodes", "2"]) == 0
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"link.lab", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.1.2.3"),
                                                             ipaddress.ip_address("127.0.0.1")}
    server_key = load_pem_private_key((out / "server.key").read_bytes(), None)
    assert server_key.public_key().public_numbers() == server.public_key().public_numbers()
    for i in range(2):  # the formats flower-supernode --auth-supernode-private-key and flwr supernode register read
        private = load_ssh_private_key((out / f"node-{i}").read_bytes(), None)
        public = load_ssh_public_key((out / f"node-{i}.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
        assert private.public_key().public_numbers() == public.public_numbers()
    assert not (out / "node-2").exists()
    for name in ("ca.key", "server.key", "node-0", "node-1"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert "wrote 8 files" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--host", "a b"], "--host='a b' is invalid"),
    (["--host", "http://x"], "--host='http://x' is invalid"),
    (["--nodes", "-1"], "--nodes=-1 is invalid"),
    (["--nodes", "x"], "--nodes"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "tls"
    assert main(["certs", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedmeta: error: ") and needle in err
    assert not out.exists()


def test_existing_credentials_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "tls"
    assert main(["certs", str(out), "--nodes", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["certs", str(out), "--nodes", "3"]) == 2
    assert "ca.crt already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
