"""A real IMAP server for tests: Dovecot from the system packages, on a free loopback port.

Each server gets its own configuration, users file and Maildir under a fresh folder;
mail is stored as the unprivileged user `nobody` (Dovecot will not store as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .smtpserver import free_port, free_ports

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists()
                                      else None)

POP3 = Path("/usr/lib/dovecot/pop3").exists()  # the dovecot-pop3d package

CONFIG = """\
protocols = {protocols}
listen = 127.0.0.1
base_dir = {root}/run
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{pop3_service}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


STARTS = 3  # a port chosen free may be taken by another process before Dovecot binds it


class PortTaken(RuntimeError):
    """Dovecot could not listen on a port chosen for it."""


class Dovecot:
    """A running Dovecot; ``stop()`` ends it and removes its files."""

    def __init__(self, user: str = "news", password: str = "imap-secret") -> None:
        assert DOVECOT is not None
        self.root = Path(tempfile.mkdtemp(prefix="mm-dovecot-"))
        os.chmod(self.root, 0o755)
        nobody = pwd.getpwnam("nobody")
        home = self.root / "home"
        home.mkdir()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        self.user, self.password = user, password
        (self.root / "users").write_text(
            f"{user}:{{PLAIN}}{password}:{nobody.pw_uid}:{nobody.pw_gid}::{home}\n")
        try:
            for attempt in range(STARTS):
                try:
                    self._start()
                    return
                except PortTaken:
                    if attempt == STARTS - 1:
                        raise
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _start(self) -> None:
        """Start Dovecot on fresh ports; raise ``PortTaken`` if another process had one."""
        if POP3:
            self.port, self.pop3_port = free_ports(2)
        else:
            self.port, self.pop3_port = free_port(), 0
        pop3 = ("pop3_uidl_format = %08Xu%08Xv\nservice pop3-login {\n  inet_listener pop3 {\n"
                f"    address = 127.0.0.1\n    port = {self.pop3_port}\n  }}\n"
                "  inet_listener pop3s {\n    port = 0\n  }\n}" if POP3 else "")
        (self.root / "dovecot.conf").write_text(CONFIG.format(
            root=self.root, port=self.port, protocols="imap pop3" if POP3 else "imap",
            pop3_service=pop3))
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    assert self.process.stderr is not None
                    with self.process.stderr:
                        said = self.process.stderr.read()
                    if b"in use" in said or b"duplicate listener" in said:
                        raise PortTaken(said.decode(errors="replace")) from None
                    raise RuntimeError(f"dovecot did not start: {said!r}") from None
                time.sleep(0.05)
        self._end()
        raise RuntimeError("dovecot did not open its port")

    def messages(self, folder: str = "Sent") -> list[bytes]:
        import imaplib

        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.login(self.user, self.password)
            imap.select(f'"{folder}"', readonly=True)
            _, data = imap.search(None, "ALL")
            found = []
            for number in data[0].split():
                _, parts = imap.fetch(number, "(FLAGS BODY.PEEK[])")
                flags, body = parts[0][0], parts[0][1]
                assert b"\\Seen" in flags
                found.append(body)
            return found

    def folder_count(self, folder: str = "INBOX") -> int:
        import imaplib

        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.login(self.user, self.password)
            status, data = imap.select(f'"{folder}"', readonly=True)
            return int(data[0]) if status == "OK" else 0

    def append(self, data: bytes, folder: str = "INBOX") -> None:
        """Deliver ``data`` into ``folder``, as a relay delivers an archive copy."""
        import imaplib

        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.login(self.user, self.password)
            status, reply = imap.append(f'"{folder}"', "", imaplib.Time2Internaldate(time.time()),
                                        data)
            assert status == "OK", reply

    def stop(self) -> None:
        self._end()
        shutil.rmtree(self.root, ignore_errors=True)

    def _end(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
