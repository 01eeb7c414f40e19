"""Certificates for the TLS tests, made with the openssl command: a CA, a server certificate for 127.0.0.1 and
localhost signed by it, a client certificate signed by it, and a second, unrelated CA (the "wrong CA")."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert), cwd=folder)  # fmt: skip
    return cert, key


def _signed(folder: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = (folder / f"{name}{s}" for s in (".key", ".csr", ".pem", ".ext"))
    extfile.write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
             cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(extfile), "-out", str(cert), cwd=folder)  # fmt: skip
    return cert, key


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "test-ca")
    server = _signed(folder, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    client = _signed(folder, "client", ca, "extendedKeyUsage=clientAuth\n")
    wrong, _ = _ca(folder, "wrong-ca")
    return Certs(ca[0], server[0], server[1], client[0], client[1], wrong)
