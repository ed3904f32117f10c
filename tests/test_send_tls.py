"""TLS (STARTTLS and implicit) with a test CA, AUTH, and the password kept secret."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from mailmerge.cli import cli

from .conftest import CampaignDir, parse
from .smtpserver import Server

SECRET = "s3cret-Pa55word!"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def campaign(basic, ca: trustme.CA, port: int, security: str, ca_file: bool = True) -> CampaignDir:
    c = basic(f"""\
smtp:
  host: 127.0.0.1
  port: {port}
  security: {security}
  username: news
  timeout: 5
  retry_delay: 0.01
""" + ("  ca_file: ca.pem\n" if ca_file else ""), rows=[["email", "name"], ["a@x.org", "A"]])
    ca.cert_pem.write_to_path(str(c.folder / "ca.pem"))
    return c


def send(c: CampaignDir, password: str | None):
    env = {"MAILMERGE_SMTP_PASSWORD": password} if password is not None else {}
    return CliRunner().invoke(cli, ["send", str(c.folder / "campaign.yaml"), "--yes"], env=env,
                              catch_exceptions=False)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_auth_delivers(basic, ca: trustme.CA, security: str) -> None:
    server = Server(tls=server_context(ca), implicit_tls=security == "ssl", users={"news": SECRET})
    try:
        c = campaign(basic, ca, server.port, security)
        result = send(c, SECRET)
        assert result.exit_code == 0, result.output
        (message,) = server.handler.received
        assert parse(message.content)["To"] == "a@x.org"
    finally:
        server.stop()
    leaked = [p for p in c.root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert SECRET not in result.output


def test_wrong_password_is_a_clear_error(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), users={"news": SECRET})
    try:
        c = campaign(basic, ca, server.port, "starttls")
        result = send(c, "wrong-password")
    finally:
        server.stop()
    assert result.exit_code == 2
    assert ("Error: stopped: the server at 127.0.0.1:" in result.output
            and "refused the login for 'news' (535 5.7.8 Authentication credentials invalid); "
                "check `smtp.username` and the password in $MAILMERGE_SMTP_PASSWORD"
            in result.output)
    assert "wrong-password" not in result.output
    assert server.handler.received == []


def test_unverifiable_certificate_is_refused(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), users={"news": SECRET})
    try:
        c = campaign(basic, ca, server.port, "starttls", ca_file=False)
        result = send(c, SECRET)
    finally:
        server.stop()
    assert result.exit_code == 2
    assert "could not be verified (unable to get local issuer certificate); for a private CA, " \
           "set `smtp.ca_file` to its certificate" in result.output


def test_missing_password_off_a_terminal(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), users={"news": SECRET})
    try:
        c = campaign(basic, ca, server.port, "starttls")
        result = send(c, None)
    finally:
        server.stop()
    assert result.exit_code == 2
    assert result.output.endswith(
        "Error: no SMTP password: the environment variable MAILMERGE_SMTP_PASSWORD is not set; "
        "export MAILMERGE_SMTP_PASSWORD=... (or run on a terminal to be asked)\n")


def test_starttls_required_but_not_offered(basic, smtp_server) -> None:
    c = basic(f"smtp: {{host: 127.0.0.1, port: {smtp_server.port}, security: starttls}}\n")
    result = CliRunner().invoke(cli, ["send", str(c.folder / "campaign.yaml"), "--yes"])
    assert result.exit_code == 2
    assert "does not offer STARTTLS" in result.output


def test_the_password_appears_in_no_output_of_a_full_run(basic, ca: trustme.CA,
                                                         tmp_path: Path) -> None:
    server = Server(tls=server_context(ca), users={"news": SECRET})
    runner = CliRunner()
    env = {"MAILMERGE_SMTP_PASSWORD": SECRET}
    try:
        c = campaign(basic, ca, server.port, "starttls")
        config = str(c.folder / "campaign.yaml")
        runs = [
            runner.invoke(cli, ["check", config], env=env),
            runner.invoke(cli, ["preview", config, "-o", str(tmp_path / "out")], env=env),
            runner.invoke(cli, ["send", config, "--yes"], env=env),
            runner.invoke(cli, ["send", config, "--yes", "--to", "me@x.org"], env=env),
            runner.invoke(cli, ["status", config, "--csv", str(tmp_path / "status.csv")], env=env),
        ]
        wrong = runner.invoke(cli, ["send", config, "--yes", "--restart"],
                              env={"MAILMERGE_SMTP_PASSWORD": SECRET + "x"})
    finally:
        server.stop()
    assert [r.exit_code for r in runs] == [0, 0, 0, 0, 0], [r.output for r in runs]
    assert wrong.exit_code == 2
    outputs = [r.output for r in [*runs, wrong]]
    assert not [o for o in outputs if SECRET in o]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".eml" for p in files) and any(p.name.endswith(".sqlite") for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []


TOKEN_SCRIPT = """\
import pathlib, sys
state, tokens = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text().split()
n = int(state.read_text()) if state.exists() else 0
state.write_text(str(n + 1))
print(tokens[min(n, len(tokens) - 1)])
"""


def oauth_campaign(basic, ca: trustme.CA, port: int, tokens: list[str]) -> CampaignDir:
    c = campaign(basic, ca, port, "starttls")
    script = c.folder / "token.py"
    script.write_text(TOKEN_SCRIPT)
    (c.root / "provider-tokens.txt").write_text("\n".join(tokens))  # the provider's side
    command = " ".join([sys.executable, str(script), str(c.folder / "count"),
                        str(c.root / "provider-tokens.txt")])
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text().replace(
        "  username: news\n", f"  username: news\n  auth: xoauth2\n  token_command: '{command}'\n"))
    return c


def test_xoauth2_refreshes_an_expired_token(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), tokens={"fresh-token-2"})
    try:
        c = oauth_campaign(basic, ca, server.port, ["expired-token-1", "fresh-token-2"])
        result = send(c, None)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert server.handler.xoauth2_seen == ["expired-token-1", "fresh-token-2"]
    assert len(server.handler.received) == 1
    files = [p for p in c.root.rglob("*") if p.is_file() and p.name != "provider-tokens.txt"]
    for secret in ("expired-token-1", "fresh-token-2"):
        assert secret not in result.output
        assert [p for p in files if secret.encode() in p.read_bytes()] == []


def test_xoauth2_gives_up_when_the_fresh_token_is_refused_too(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), tokens={"never"})
    try:
        c = oauth_campaign(basic, ca, server.port, ["bad-1", "bad-2"])
        result = send(c, None)
    finally:
        server.stop()
    assert result.exit_code == 2
    assert "refused the login for 'news' (535 5.7.8 Authentication credentials invalid); " \
           "check `smtp.username` and the token from `smtp.token_command` (fetched twice)" \
           in result.output
    assert "bad-1" not in result.output and "bad-2" not in result.output


def test_a_failing_token_command_is_a_clear_error(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), tokens={"x"})
    try:
        c = campaign(basic, ca, server.port, "starttls")
        config = c.folder / "campaign.yaml"
        config.write_text(config.read_text().replace(
            "  username: news\n", "  username: news\n  auth: xoauth2\n"
            "  token_command: 'echo token expired, log in again >&2; exit 3'\n"))
        result = send(c, None)
    finally:
        server.stop()
    assert result.exit_code == 2
    assert ("Error: stopped: `smtp.token_command` failed (exit 3): token expired, log in again; "
            "it must print one access token and nothing else") in result.output


def test_a_login_that_is_not_ascii_works_over_auth_plain(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), users={"jörg": "pässwörd-✓"})
    try:
        c = campaign(basic, ca, server.port, "starttls")
        config = c.folder / "campaign.yaml"
        config.write_text(config.read_text().replace("username: news", "username: jörg"))
        result = send(c, "pässwörd-✓")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert len(server.handler.received) == 1


def test_a_login_that_is_not_ascii_without_auth_plain_is_a_clear_error(basic,
                                                                       ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), users={"jörg": SECRET}, auth_exclude=["PLAIN"])
    try:
        c = campaign(basic, ca, server.port, "starttls")
        config = c.folder / "campaign.yaml"
        config.write_text(config.read_text().replace("username: news", "username: jörg"))
        result = send(c, SECRET)
    finally:
        server.stop()
    assert result.exit_code == 2, result.output
    assert ("Error: stopped: the login name or password is not ASCII, and the server does not "
            "offer AUTH PLAIN, which could carry it; use an ASCII login, or a server that "
            "offers AUTH PLAIN") in result.output
    assert server.handler.received == []


def test_an_xoauth2_user_that_is_not_ascii_works(basic, ca: trustme.CA) -> None:
    server = Server(tls=server_context(ca), tokens={"token-1"})
    server.handler.xoauth2_users = {"jörg@acme.example"}
    try:
        c = oauth_campaign(basic, ca, server.port, ["token-1"])
        config = c.folder / "campaign.yaml"
        config.write_text(config.read_text().replace("username: news",
                                                     "username: jörg@acme.example"))
        result = send(c, None)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert server.handler.xoauth2_seen == ["token-1"] and len(server.handler.received) == 1
