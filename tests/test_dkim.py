"""DKIM: every message is signed, and the signature verifies against the public key."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner

from mailmerge import ConfigError, load_campaign
from mailmerge.cli import cli

from .standards import standard_problems

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns(record: bytes):
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mm2026._domainkey.acme.example." else None
    return lookup


def signed_campaign(basic, key: Path, extra: str = ""):
    c = basic(f"dkim: {{domain: acme.example, selector: mm2026, key_file: {key}}}\n"
              'unsubscribe: "https://acme.example/u/{{ name|urlencode }}"\n' + extra)
    return c


def test_messages_are_signed_and_verify(basic, keypair) -> None:
    key, record = keypair
    c = signed_campaign(basic, key)
    (built, msg), = c.messages()
    assert built.data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(built.data, dnsfunc=dns(record))
    signature = msg["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
    assert "c=relaxed/relaxed" in signature and "d=acme.example" in signature
    signed = signature.split("h=")[1].split(";")[0].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type",
                 "list-unsubscribe", "list-unsubscribe-post"):
        assert name in signed
    assert standard_problems(built.data) == []
    tampered = built.data.replace(b"Hello Zo", b"Hallo Zo")
    assert not dkim.verify(tampered, dnsfunc=dns(record))


def test_dry_run_files_are_signed(basic, keypair, tmp_path: Path) -> None:
    key, record = keypair
    c = signed_campaign(basic, key)
    result = CliRunner().invoke(cli, ["preview", str(c.folder / "campaign.yaml"), "-o",
                                      str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (eml,) = (tmp_path / "o").glob("*.eml")
    assert dkim.verify(eml.read_bytes(), dnsfunc=dns(record))


def test_check_warns_when_the_from_domain_is_not_the_dkim_domain(basic, keypair) -> None:
    key, _ = keypair
    c = signed_campaign(basic, key, 'from: "News <news@other.example>"\n')
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 0
    assert ("Warning: mail from other.example is signed for acme.example: DMARC needs the DKIM "
            "domain to match the From domain") in result.output


def test_a_bad_key_file_is_a_configuration_error(basic, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    c = signed_campaign(basic, bad)
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 2
    assert f"the DKIM key file {bad} holds no usable private key" in result.output
    c = signed_campaign(basic, tmp_path / "missing.pem")
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 2 and "cannot be read" in result.output


def test_dkim_keys_are_checked(basic) -> None:
    c = basic("dkim: {domain: 'acme example', selector: s, key_file: k.pem}\n")
    with pytest.raises(ConfigError) as info:
        load_campaign(c.folder / "campaign.yaml")
    assert "`dkim.domain` 'acme example' is not a DNS name" in str(info.value)


SHIPPED = sorted((ROOT / "campaigns").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_message_signed_verifies_and_meets_the_standards(path: Path,
                                                                       keypair) -> None:
    from dataclasses import replace

    from mailmerge import iter_messages
    from mailmerge.campaign import Dkim

    key, record = keypair
    campaign = replace(load_campaign(path), dkim=Dkim("acme.example", "mm2026", key))
    count = 0
    for outcome in iter_messages(campaign):
        assert outcome.built is not None
        assert dkim.verify(outcome.built.data, dnsfunc=dns(record))
        assert standard_problems(outcome.built.data) == []
        count += 1
    assert count >= 3
