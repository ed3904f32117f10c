"""OAuth2 bearer tokens for SMTP (XOAUTH2), fetched by running the user's token command.

Any provider's tool works (`gcloud auth print-access-token`, `az account get-access-token
--query accessToken -o tsv`, a script around a refresh token): mailmerge runs it, reads
the token from its standard output, and runs it again when the server rejects the token
(it expired). The token is never printed, logged or stored.
"""

from __future__ import annotations

import subprocess
import threading

from ..errors import SendError

TOKEN_TIMEOUT = 120


class TokenSource:
    """The current token, shared by every connection of a run."""

    def __init__(self, command: str) -> None:
        self.command = command
        self._token: str | None = None
        self._lock = threading.Lock()

    def get(self, refresh: bool = False) -> str:
        with self._lock:
            if self._token is None or refresh:
                self._token = self._run()
            return self._token

    def _run(self) -> str:
        try:
            done = subprocess.run(self.command, shell=True, capture_output=True, text=True,
                                  timeout=TOKEN_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise SendError(f"`smtp.token_command` did not finish in {TOKEN_TIMEOUT} s",
                            hint="run it by hand to see what it waits for") from None
        except OSError as exc:
            raise SendError(f"`smtp.token_command` could not be run: {exc.strerror}") from exc
        token = done.stdout.strip()
        if done.returncode != 0 or not token or any(c.isspace() for c in token):
            detail = (done.stderr.strip().splitlines() or [""])[-1][:200]
            raise SendError(f"`smtp.token_command` failed (exit {done.returncode})"
                            + (f": {detail}" if detail else ""),
                            hint="it must print one access token and nothing else")
        return token


def xoauth2(username: str, token: str) -> str:
    """The XOAUTH2 initial response (RFC-less, but the same at every provider)."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"
