"""HTTPS for the redirector: a hardened server context, and a certificate that can be
renewed in place (certbot, lego) without dropping a connection.

The context follows Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, forward-secret
AEAD suites for TLS 1.2 (TLS 1.3's are all good), no compression, no renegotiation,
ALPN ``http/1.1``. Every listener is given one fixed context whose SNI callback hands
each new handshake the current certificate's context, so a renewed certificate is served
to new connections at once while open ones go on with the old. A renewal is noticed on
SIGHUP and when either file changes (looked at every ``WATCH_EVERY`` seconds); a pair
that does not load keeps the old one in service, and says which file and why.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import structlog

from router.core import reading
from router.errors import RouterError
from router.serve.settings import Settings
from router.watch.files import FileWatch

log = structlog.get_logger("router.serve.tls")

WATCH_EVERY = 1.0  # seconds between looks at the certificate files
READ_TIMEOUT = 10.0  # seconds a renewed pair may take to read (then the old one stays)
# Mozilla "intermediate" (v5.7) for TLS 1.2; TLS 1.3 uses OpenSSL's own list.
INTERMEDIATE = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
])


class TlsError(RouterError):
    """The certificate or its key cannot be loaded."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A hardened server context with ``cert`` and ``key``; ``TlsError`` names the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    for path in (cert, key):
        if not path.exists():
            raise TlsError(f"{path}: no such file (tls_cert, tls_key)")
        try:
            reading.check(path, "certificate")
        except OSError as e:
            raise TlsError(f"{e} (tls_cert, tls_key)") from None
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"{cert} with {key}: cannot be loaded as a certificate and its key: "
                       f"{getattr(e, 'reason', None) or e}") from None
    return context


def certificate_files(settings: Settings) -> tuple[Path, Path]:
    """The certificate and key ``--https`` needs, or ``TlsError`` saying where to give them."""
    if settings.tls_cert is None or settings.tls_key is None:
        raise TlsError("--https needs tls_cert and tls_key (in the [server] table of "
                       "--config, or --tls-cert and --tls-key)")
    return settings.tls_cert, settings.tls_key


class Certificate:
    """The HTTPS listeners' certificate: ``context`` is what every listener is given."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = server_context(cert, key)  # fixed: it only hands over
        self.context.sni_callback = self._hand_over
        self.current = self.context  # until a renewal replaces it
        self.error: str | None = None
        self.watch = FileWatch((cert, key), self._changed, WATCH_EVERY)

    def _hand_over(self, conn: ssl.SSLObject, _name: str | None,
                   _context: ssl.SSLContext) -> None:
        conn.context = self.current  # called for every handshake, SNI or not

    async def reload(self) -> bool:
        """Load the files again (off the loop, bounded); on any problem keep serving the
        old certificate."""
        cert, key = self.cert, self.key
        try:
            self.current = await self.watch.reread(lambda: server_context(cert, key),
                                                   READ_TIMEOUT)
        except (TlsError, TimeoutError) as e:
            self.error = str(e)
            log.error("tls_reload_failed", error=self.error, keeping="the previous certificate")
            return False
        self.error = None
        log.info("tls_reloaded", cert=str(self.cert), key=str(self.key))
        return True

    async def _changed(self) -> None:
        await self.reload()
