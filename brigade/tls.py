"""The certificate ``brigade up --https`` serves: a small local CA and a leaf for this machine.

Browsers give a page the microphone only in a secure context, so phones on the
LAN need ``https://``.  The CA (ten years) is made once and kept in a directory
(``--tls-dir``; default ``$XDG_DATA_HOME/bucket-brigade/tls``), so a phone that
trusts it, or a browser that accepted the leaf, keeps doing so across
restarts.  The leaf names ``localhost``, this machine's host name (and
``NAME.local``), loopback and the LAN addresses; it is made again, by the same
CA, when a name or address it lacks is asked for or when it nears its end
(:func:`needs_new_leaf`, a pure decision with ``now`` passed in).

Keys are ECDSA P-256, written with mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS: Final = 3650
LEAF_DAYS: Final = 397
"""Within what every browser accepts for a server certificate (Apple: 398 days)."""
RENEW_BEFORE_DAYS: Final = 30
ORGANIZATION: Final = "Bucket Brigade (local)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Certificates:
    """Paths of the files ``brigade up --https`` hands to the gateways, and the leaf's identity."""

    ca_cert: Path
    cert: Path
    """The leaf followed by the CA (the chain a server sends)."""
    key: Path
    fingerprint_sha256: str
    """SHA-256 of the leaf (DER), as browsers show it: ``AB:CD:...``."""
    spki_sha256_b64: str
    """Base64 SHA-256 of the leaf's public key (Chromium's SPKI allow-list flag)."""


def default_dir() -> Path:
    """``$XDG_DATA_HOME/bucket-brigade/tls`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bucket-brigade" / "tls"


def lan_addresses() -> list[str]:
    """This machine's non-loopback IP addresses, the one with the default route first.

    No packet is sent: connecting a UDP socket only picks the outgoing address.
    """
    found: list[str] = []
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            found.append(str(sock.getsockname()[0]))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
            found.append(str(info[4][0]))
    addresses: list[str] = []
    for raw in found:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or str(ip) in addresses:
            continue
        addresses.append(str(ip))
    return addresses


def host_names() -> list[str]:
    """``localhost``, the host name and its mDNS form (``NAME.local``), lower case."""
    name = socket.gethostname().lower().split(".", 1)[0]
    names = ["localhost"]
    if name and name != "localhost":
        names += [name, f"{name}.local"]
    return names


def needs_new_leaf(
    leaf: x509.Certificate | None,
    ca: x509.Certificate,
    names: Iterable[str],
    ips: Iterable[IPAddress],
    now: dt.datetime,
) -> bool:
    """Whether the leaf on disk must be replaced: missing, from another CA, lacking a
    name or address, or within ``RENEW_BEFORE_DAYS`` of its end."""
    if leaf is None or leaf.issuer != ca.subject:
        return True
    if leaf.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return True
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    has_names = set(san.get_values_for_type(x509.DNSName))
    has_ips = set(san.get_values_for_type(x509.IPAddress))
    return not (set(names) <= has_names and set(ips) <= has_ips)


def make_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Bucket Brigade local CA ({socket.gethostname()})"
            ),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    names: Sequence[str],
    ips: Sequence[IPAddress],
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost"),
        ]
    )
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, upper-case hex pairs joined by colons."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def spki_sha256_b64(cert: x509.Certificate) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (DER)."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return base64.b64encode(digest.finalize()).decode()


def ensure(
    directory: Path, names: Sequence[str], ips: Sequence[str], now: dt.datetime
) -> Certificates:
    """The CA and a leaf for ``names`` and ``ips`` in ``directory``, made when needed.

    Raises ``ValueError`` for an address that is not one, ``OSError`` when the
    directory cannot be written.
    """
    addresses: list[IPAddress] = [ipaddress.ip_address(ip) for ip in ips]
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    if ca_cert_path.is_file() and ca_key_path.is_file():
        ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path} is not an EC private key")
        ca_key = loaded
    else:
        ca_key, ca = make_ca(now)
        _write_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf = _load_leaf(cert_path) if key_path.is_file() else None
    if needs_new_leaf(leaf, ca, names, addresses, now):
        # Keep what the old leaf covered, so that an address seen once stays valid.
        names, addresses = _union(leaf, names, addresses)
        key, leaf = make_leaf(ca_key, ca, names, addresses, now)
        _write_key(key_path, key)
        chain = leaf.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(chain + ca.public_bytes(serialization.Encoding.PEM))
    assert leaf is not None
    return Certificates(
        ca_cert=ca_cert_path,
        cert=cert_path,
        key=key_path,
        fingerprint_sha256=fingerprint(leaf),
        spki_sha256_b64=spki_sha256_b64(leaf),
    )


def _load_leaf(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _union(
    leaf: x509.Certificate | None, names: Sequence[str], ips: Sequence[IPAddress]
) -> tuple[list[str], list[IPAddress]]:
    all_names, all_ips = list(names), list(ips)
    if leaf is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            all_names += [n for n in san.get_values_for_type(x509.DNSName) if n not in all_names]
            for ip in san.get_values_for_type(x509.IPAddress):
                if isinstance(ip, IPAddress) and ip not in all_ips:
                    all_ips.append(ip)
    return all_names, all_ips


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
