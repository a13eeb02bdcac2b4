"""A throw-away certificate authority for HTTPS mirrors on loopback (``cryptography``).

``make_ca(folder)`` writes ``ca.pem`` (the CA, for the prober's ``--ca-file``) and
``server.pem``/``server.key`` (a leaf for ``localhost`` and 127.0.0.1 signed by it), so
that verification in the tests is real: the chain and the host name are checked.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    ca_key: ec.EllipticCurvePrivateKey

    def reissue(self, common: str = "localhost") -> int:
        """A new leaf for localhost and 127.0.0.1 from the same CA, written over ``cert``
        and ``key`` (as a renewal does); its serial number."""
        leaf, key = _leaf(common, self.ca_key)
        _write(self, leaf, key)
        return int(leaf.serial_number)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def context_for(self, name: str, folder: Path) -> ssl.SSLContext:
        """A server context with a leaf of this CA for ``name`` only (a certificate
        that is valid, but for another host than the one asked for)."""
        leaf, key = _leaf(name, self.ca_key, (x509.DNSName(name),))
        other = Pki(self.ca, folder / f"{name}.pem", folder / f"{name}.key", self.ca_key)
        _write(other, leaf, key)
        return other.server_context()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
             issuer_key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), False))


def make_ca(folder: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (_builder("mirror-router test CA", "mirror-router test CA", ca_key, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), True)
          .sign(ca_key, hashes.SHA256()))
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", ca_key)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write(pki, *_leaf("localhost", ca_key))
    return pki


def _leaf(common: str, ca_key: ec.EllipticCurvePrivateKey,
          names: tuple[x509.GeneralName, ...] = (
              x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (_builder(common, "mirror-router test CA", key, ca_key)
            .add_extension(x509.SubjectAlternativeName(list(names)), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    return leaf, key


def _write(pki: Pki, leaf: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Key first, then the certificate, each renamed into place whole."""
    for path, data in ((pki.key, key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())),
                       (pki.cert, leaf.public_bytes(serialization.Encoding.PEM))):
        temporary = path.with_name(path.name + ".new")
        temporary.write_bytes(data)
        temporary.replace(path)
