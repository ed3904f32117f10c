from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailmerge import ConfigError, load_campaign, parse_campaign

P = Path("/c/campaign.yaml")
BASE = """\
name: autumn
from: "Acme <news@acme.example>"
subject: "Hi"
templates:
  html: mail.html
recipients: people.csv
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_campaign(text, P)
    return str(info.value)


def test_parses_all_keys_with_paths_relative_to_the_campaign_file() -> None:
    campaign = parse_campaign(BASE + """\
to: "{{ name }} <{{ email }}>"
cc: "{{ cc }}"
bcc: archive@acme.example
reply_to: help@acme.example
sender: bot@acme.example
attachments: ["invoices/{{ id }}.pdf"]
headers:
  X-Campaign: autumn
unsubscribe: "https://acme.example/u/{{ token }}"
smtp: {host: mail.acme.example, port: 587, security: starttls, username: news}
""", P)
    assert campaign.name == "autumn"
    assert campaign.html_template == Path("/c/mail.html")
    assert campaign.text_template is None
    assert campaign.recipients.path == Path("/c/people.csv")
    assert campaign.attachments == ("invoices/{{ id }}.pdf",)
    assert campaign.headers == (("X-Campaign", "autumn"),)
    assert campaign.smtp.host == "mail.acme.example"
    assert campaign.smtp.username == "news"
    assert campaign.smtp.password_env == "MAILMERGE_SMTP_PASSWORD"
    assert campaign.line_of("smtp") == 16


def test_to_defaults_to_the_email_column() -> None:
    assert parse_campaign(BASE, P).to == "{{ email }}"


def test_recipients_mapping_and_structured_addresses() -> None:
    campaign = parse_campaign(BASE.replace("recipients: people.csv\n", "") + """\
recipients: {path: people.csv, encoding: latin-1, delimiter: tab, key: id, sheet: S}
to: [{name: "{{ name }}", address: "{{ email }}"}, {address: boss@acme.example}]
""", P)
    assert campaign.recipients.delimiter == "\t"
    assert campaign.recipients.encoding == "latin-1"
    assert campaign.recipients.key == "id"
    assert campaign.to == (("{{ name }}", "{{ email }}"), ("", "boss@acme.example"))


def test_unknown_key_suggests_the_nearest() -> None:
    assert error_of(BASE + "subjcet: x\n") == (
        "/c/campaign.yaml, line 7: unknown key `subjcet`; did you mean `subject`?")


def test_unknown_nested_key_names_its_path_and_line() -> None:
    assert error_of(BASE + "smtp:\n  host: x\n  prot: 25\n") == (
        "/c/campaign.yaml, line 9: unknown key `smtp.prot`; did you mean `port`?")


def test_password_is_refused_with_an_explanation() -> None:
    message = error_of(BASE + "smtp:\n  host: x\n  password: hunter2\n")
    assert message.startswith("/c/campaign.yaml, line 9: `smtp.password` is not allowed; "
                              "passwords never go in the campaign file; set `password_env:")
    assert "hunter2" not in message


def test_missing_required_key() -> None:
    assert error_of(BASE.replace('subject: "Hi"\n', "")) == (
        "/c/campaign.yaml: missing required key `subject`; add `subject:` to the campaign file")


def test_wrong_type_names_key_and_line() -> None:
    assert error_of(BASE + "smtp:\n  port: many\n") == (
        "/c/campaign.yaml, line 8: `smtp.port` must be a whole number, not str 'many'")


def test_duplicate_key_is_an_error() -> None:
    assert error_of(BASE + 'subject: "again"\n') == (
        "/c/campaign.yaml, line 7: not valid YAML: duplicate key 'subject' (first on line 3); "
        "fix the YAML syntax (indentation, quotes around values that start with {{ )")


def test_aliases_are_refused() -> None:
    assert "YAML aliases (*name) are not supported" in error_of(
        BASE + "headers:\n  X-A: &a hello\n  X-B: *a\n")


def test_python_object_tags_are_refused() -> None:
    assert "could not determine a constructor" in error_of(
        BASE + "headers:\n  X-A: !!python/object/apply:os.system ['true']\n")


def test_broken_yaml_names_the_line() -> None:
    assert error_of(BASE + "to: {{ email }}\n") == (
        "/c/campaign.yaml, line 7: not valid YAML: a mapping cannot be a key; a value that "
        'starts with {{ must be in quotes, e.g. to: "{{ email }}"; fix the YAML syntax '
        "(indentation, quotes around values that start with {{ )")
    assert error_of(BASE + "to: [a\n").startswith("/c/campaign.yaml, line 8: not valid YAML")


def test_reserved_header_is_refused() -> None:
    assert error_of(BASE + "headers:\n  Subject: x\n") == (
        "/c/campaign.yaml, line 8: header 'Subject' is set by mailmerge itself; use the campaign "
        "key for it (from, to, subject, unsubscribe ...) instead of `headers:`")


def test_bad_security_mode() -> None:
    assert error_of(BASE + "smtp: {security: tls}\n") == (
        "/c/campaign.yaml, line 7: `smtp.security` must be one of none, starttls, ssl, not 'tls'")


def test_templates_need_html_or_text() -> None:
    assert error_of(BASE.replace("templates:\n  html: mail.html\n", "templates: {}\n")) == (
        "/c/campaign.yaml, line 4: `templates` needs `html:`, `markdown:` or `text:`; HTML or "
        "Markdown with a text part, or text alone")


def test_load_reports_missing_files(tmp_path: Path) -> None:
    (tmp_path / "campaign.yaml").write_text(BASE)
    (tmp_path / "people.csv").write_text("email\n")
    with pytest.raises(ConfigError) as info:
        load_campaign(tmp_path / "campaign.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'campaign.yaml'}, line 4: `templates` names {tmp_path / 'mail.html'}, "
        "which does not exist; paths are relative to the campaign file's folder")


def test_load_reports_a_missing_campaign_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_campaign(tmp_path / "nope.yaml")
    assert str(info.value) == (f"{tmp_path / 'nope.yaml'}: campaign file not found; check the "
                               "path, or create one with a text editor")


def test_imap_lookup_keys() -> None:
    campaign = parse_campaign(BASE + "imap: {host: imap.gmail.com, username: n@acme.example, "
                              "copy: false, lookup: '[Gmail]/Sent Mail', lookup_wait: 5}\n", P)
    assert campaign.imap is not None
    assert (campaign.imap.copy, campaign.imap.lookup, campaign.imap.lookup_wait) == (
        False, ("[Gmail]/Sent Mail",), 5.0)
    listed = parse_campaign(BASE + "imap: {host: h, username: u, lookup: [INBOX, Archive]}\n", P)
    assert listed.imap is not None and listed.imap.lookup == ("INBOX", "Archive")
    assert listed.imap.copy is True and listed.imap.lookup_wait == 60.0


@pytest.mark.parametrize("imap, message", [
    ("lookup: [INBOX, 3]", "line 7: `imap.lookup` must be a folder name or a list of them; "
                           "e.g. `lookup: Sent`"),
    ("lookup: INBOX, lookup_wait: -1", "line 7: `imap.lookup_wait` must be from 0 to 3600 seconds"),
    ("copy: false", "line 7: `imap:` with `copy: false` and no `lookup:` does nothing; add "
                    "`lookup:` (the folder where sent mail appears) or `drafts:` (for `mailmerge "
                    "drafts`), or remove `imap:`"),
    ("copy: maybe", "line 7: `imap.copy` must be true or false, not 'maybe'"),
])
def test_imap_lookup_mistakes(imap: str, message: str) -> None:
    assert message in error_of(BASE + f"imap: {{host: h, username: u, {imap}}}\n")


@pytest.mark.parametrize("smtp, message", [
    ("timeout: -1", "line 7: `smtp.timeout` must be more than 0 and at most 3600 seconds, not -1.0"),
    ("timeout: 0", "line 7: `smtp.timeout` must be more than 0 and at most 3600 seconds, not 0.0"),
    ("timeout: .nan", "line 7: `smtp.timeout` must be more than 0 and at most 3600 seconds, not nan"),
    ("host: ''", "line 7: `smtp.host` '' is not a host name; write e.g. `host: mail.acme.example`"),
    ("port: 70000", "line 7: `smtp.port` must be from 1 to 65535, not 70000"),
])
def test_smtp_settings_that_no_connection_can_use(smtp: str, message: str) -> None:
    assert message in error_of(BASE + f"smtp: {{{smtp}}}\n")


def test_imap_settings_that_no_connection_can_use() -> None:
    assert "`imap.timeout` must be more than 0" in error_of(
        BASE + "imap: {host: h, username: u, timeout: 0}\n")


def test_a_header_name_has_a_sane_length() -> None:
    name = "X-" + "a" * 998  # YAML keys are at most 1,024 characters
    assert ("line 8: the header name 'X-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'... is 1,000 "
            "characters long; at most 64; use a short name such as X-Campaign") in error_of(
        BASE + f"headers:\n  {name}: hello\n")
    assert parse_campaign(BASE + f"headers:\n  X-{'b' * 62}: hello\n", P).headers



@pytest.mark.parametrize("section", ["smtp: {host: mail.acme.example, security: none, "
                                     "username: news}",
                                     "imap: {host: imap.acme.example, security: none, "
                                     "username: news}"])
def test_a_login_in_clear_text_is_only_for_this_machine(section: str) -> None:
    assert "unencrypted; use `security:" in error_of(BASE + section + "\n")
    for host in ("localhost", "127.0.0.1", "'::1'", "'[::1]'"):
        assert parse_campaign(BASE + section.replace(section.split("host: ")[1].split(",")[0],
                                                     host) + "\n", P)


@pytest.mark.parametrize("entry", ['attachments: [""]', 'attachments: "  "',
                                   'attachments: [a.pdf, ""]'])
def test_an_empty_attachment_entry_is_a_mistake(entry: str) -> None:
    assert error_of(BASE + entry + "\n") == (
        "/c/campaign.yaml, line 7: `attachments` has an empty entry, which names no file; "
        "remove it (an entry such as \"{{ file }}\" whose cell is empty attaches nothing)")


def test_a_templated_attachment_that_renders_empty_attaches_nothing(basic) -> None:
    c = basic('attachments: ["{{ file }}"]\n', rows=[["email", "name", "file"],
                                                      ["a@x.org", "A", ""]])
    (built, msg), = c.messages()
    assert list(msg.iter_attachments()) == []


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    return str(info.value)


def test_a_folder_named_as_the_sheet_or_a_template_says_it_is_a_folder(tmp_path: Path) -> None:
    config = tmp_path / "campaign.yaml"
    (tmp_path / "mail.html").write_text("<p>x</p>")
    (tmp_path / "people").mkdir()
    (tmp_path / "people" / "march.csv").write_text("email\n")
    (tmp_path / "people" / "notes.doc").write_text("")
    config.write_text(BASE.replace("recipients: people.csv", "recipients: people"))
    assert load_error(config) == (
        f"{config}, line 6: `recipients` names {tmp_path / 'people'}, which is a folder, not "
        "a file; name a file in it, e.g. people/march.csv")
    (tmp_path / "templates").mkdir()
    config.write_text(BASE.replace("html: mail.html", "html: templates"))
    assert load_error(config) == (
        f"{config}, line 4: `templates` names {tmp_path / 'templates'}, which is a folder, "
        "not a file; name the file itself, not its folder")


def test_a_missing_file_suggests_the_nearest_names(tmp_path: Path) -> None:
    config = tmp_path / "campaign.yaml"
    (tmp_path / "mail.html").write_text("<p>x</p>")
    (tmp_path / "people.csv").write_text("email\n")
    config.write_text(BASE.replace("recipients: people.csv", "recipients: poeple.csv"))
    assert load_error(config) == (
        f"{config}, line 6: `recipients` names {tmp_path / 'poeple.csv'}, which does not "
        "exist; did you mean people.csv? paths are relative to the campaign file's folder")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_as_the_sheet_is_refused_without_reading_it(tmp_path: Path,
                                                                        kind: str) -> None:
    config = tmp_path / "campaign.yaml"
    (tmp_path / "mail.html").write_text("<p>x</p>")
    if kind == "fifo":
        os.mkfifo(tmp_path / "people.csv")  # opening it to read would wait for a writer
    else:
        (tmp_path / "people.csv").symlink_to(kind)
    config.write_text(BASE)
    assert load_error(config) == (
        f"{config}, line 6: `recipients` names {tmp_path / 'people.csv'}, which is not a "
        "regular file (a FIFO or a device); name a file saved on disk")
