"""DKIM signatures (RFC 6376) over the exact bytes that are sent or written.

dkimpy does the cryptography. The header list is ours: its default leaves out
List-Unsubscribe-Post, which RFC 8058 requires to be signed for one-click unsubscribe.
Headers named here but absent from a message are still listed, so that nobody can add
them on the way without breaking the signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .localfiles import KIB, read_bytes

SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
    b"content-type", b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post", b"list-id",
    b"sender",
)


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for one domain and selector with one private key."""

    domain: str
    selector: str
    key: bytes

    def sign(self, data: bytes) -> bytes:
        import dkim

        header: bytes = dkim.sign(data, self.selector.encode("ascii"), self.domain.encode("ascii"),
                           self.key, canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=list(SIGNED_HEADERS), linesep=b"\r\n")
        return header + data


def load_signer(domain: str, selector: str, key_file: Path, where: Path,
                line: int | None) -> DkimSigner:
    """Read the private key and prove it signs. Raises ConfigError saying what is wrong."""
    import dkim

    try:
        key = read_bytes(key_file, 64 * KIB)  # an RSA key of 8,192 bits takes 6.5 KB
    except OSError as exc:
        raise ConfigError(f"the DKIM key file {key_file} cannot be read ({exc.strerror})",
                          path=where, line=line,
                          hint="`dkim.key_file` is relative to the campaign file") from exc
    signer = DkimSigner(domain, selector, key)
    probe = (b"From: a@" + domain.encode("ascii") + b"\r\nSubject: probe\r\n"
             b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\nprobe\r\n")
    try:
        signer.sign(probe)
    except (dkim.DKIMException, ValueError, IndexError, TypeError) as exc:
        raise ConfigError(f"the DKIM key file {key_file} holds no usable private key ({exc})",
                          path=where, line=line,
                          hint="give a PEM RSA private key, e.g. made with "
                               "`openssl genrsa -out dkim.pem 2048`") from exc
    return signer
