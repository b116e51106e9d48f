"""A private certificate authority made for a test, and what it signs: the HTTPS a cluster behind a
TLS-intercepting proxy, or with a model mirror signed by its own CA, sees. Made with the ``openssl``
command line, in the test's own folder; nothing is added to the system's trusted CAs."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The server certificate's extensions: what Python's default context (X509_STRICT) asks of a leaf.
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class PrivateCA:
    """A CA's certificate (PEM: what ``ModelCaFile`` and a ``caBundle`` ConfigMap hold) and a server
    certificate it signed for 127.0.0.1, with its key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the certificate the CA signed."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _openssl(*args: str) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise RuntimeError("openssl is not installed: run `apt-get install openssl`")
    subprocess.run([tool, *args], check=True, capture_output=True)


def make_ca(folder: Path, name: str = "speech-operator test private CA") -> PrivateCA:
    """A new CA in ``folder`` and a certificate it signed for 127.0.0.1 (EC P-256, valid two days)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt, ext = folder / "server.key", folder / "server.csr", folder / "server.crt", folder / "server.ext"
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *curve, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text(_SERVER_EXTENSIONS)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return PrivateCA(ca_crt, crt, key)
