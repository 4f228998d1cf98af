"""Credentials for a secure deployment: a CA, the SuperLink's TLS certificate, SuperNode key pairs.

``fedmeta certs DIR --host SERVER [--host ...] --nodes N`` writes

- ``ca.crt`` / ``ca.key``: a self-signed certificate authority (ECDSA P-384). ``ca.crt`` goes to
  every SuperNode (``--root-certificates``) and to the flwr CLI (``root-certificates`` in
  ``config.toml``); ``ca.key`` stays offline.
- ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, valid for the
  names and IP addresses given with ``--host`` (its subject alternative names; a client that
  dials an address missing from them fails the TLS handshake) plus ``localhost`` and
  ``127.0.0.1``.
- ``node-<i>`` / ``node-<i>.pub``: one SuperNode key pair per node (ECDSA P-384, OpenSSH
  format, as Flower's ``--auth-supernode-private-key`` and ``flwr supernode register`` read
  them).

Private keys are written with mode 0600; existing files are never overwritten.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmeta.config import ConfigError

CURVE = ec.SECP384R1()
VALID_DAYS = 365
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


def write_credentials(out_dir: Path, hosts: Sequence[str], nodes: int) -> list[Path]:
    """Write the CA, the SuperLink certificate for ``hosts`` and ``nodes`` SuperNode key pairs into
    ``out_dir``; return the files written.  Raises :class:`ConfigError` (one line) on bad input or
    when a file would be overwritten."""
    if not 0 <= nodes <= 10_000:
        raise ConfigError(f"--nodes={nodes} is invalid; valid: 0..10000")
    names = list(dict.fromkeys([*hosts, *DEFAULT_HOSTS]))
    sans = [_san(name) for name in names]
    files = ["ca.crt", "ca.key", "server.pem", "server.key"]
    files += [f"node-{i}{suffix}" for i in range(nodes) for suffix in ("", ".pub")]
    existing = [name for name in files if (out_dir / name).exists()]
    if existing:
        raise ConfigError(f"{out_dir}: {existing[0]} already exists; valid: a directory without these "
                          "credentials (they are never overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(CURVE)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmeta deployment CA")])
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), now)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(CURVE)
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    server_cert = (_builder(server_name, ca_name, server_key.public_key(), now)
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA384()))
    written = [
        _write(out_dir / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "ca.key", _pem_key(ca_key), private=True),
        _write(out_dir / "server.pem", server_cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "server.key", _pem_key(server_key), private=True),
    ]
    for i in range(nodes):
        key = ec.generate_private_key(CURVE)
        written.append(_write(out_dir / f"node-{i}", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
            private=True))
        written.append(_write(out_dir / f"node-{i}.pub", key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + f" fedmeta-node-{i}\n".encode()))
    return written


def _san(name: str) -> x509.GeneralName:
    """An IP address or DNS name as a subject alternative name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not name or any(c.isspace() or c in "/:@" for c in name):
        raise ConfigError(f"--host={name!r} is invalid; valid: a DNS name or an IP address of the SuperLink")
    return x509.DNSName(name)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey,
             now: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS)))


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    """Create ``path`` (never overwriting it) with ``data``; mode 0600 for a private key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
