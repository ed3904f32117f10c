"""Writes the classic-mailmerge cases the importer is tested on, and what the classic
tool makes of each: run with the classic tool (PyPI mailmerge 2.3.0) on the PATH, e.g.

    python3 -m venv /tmp/classic && /tmp/classic/bin/pip install mailmerge==2.3.0
    PATH=/tmp/classic/bin:$PATH python3 tests/data/classic/make_cases.py

Each case is a folder with the classic tool's three files (and attachments), and
``classic_output.txt``: the messages of its dry run (``--output-format raw``). The
files in ``sdist/`` are the test data of the classic tool's source distribution (its
licence is beside them); ``sample/`` is what ``mailmerge --sample`` writes.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
SDIST = HERE / "sdist"
STARTTLS = """\
[smtp_server]
host = mail.example.org
port = 587
security = STARTTLS
username = someone@example.org
ratelimit = 30
"""

CASES: dict[str, dict[str, str | bytes]] = {
    "html": {
        "mailmerge_template.txt": """\
            TO: "{{name}}" <{{email}}>
            SUBJECT: Your order, {{name}}
            FROM: Shop <shop@example.org>
            REPLY-TO: Help <help@example.org>
            CONTENT-TYPE: text/html

            <html><body><p>Hi, {{name}},</p><p>Your order <b>{{number}}</b> has shipped.</p></body></html>
            """,
        "mailmerge_database.csv": "email,name,number\nbob@example.org,Bob,17\nann@example.com,Ann,42\n",
        "mailmerge_server.conf": STARTTLS,
    },
    "html_plaintext": {
        "mailmerge_template.txt": """\
            TO: {{email}}
            SUBJECT: Testing mailmerge
            FROM: from@example.org
            MIME-Version: 1.0
            Content-Type: multipart/alternative; boundary="boundary"

            This is a MIME-encoded message. If you are seeing this, your mail
            reader is old.

            --boundary
            Content-Type: text/plain; charset=us-ascii

            {{message}}

            --boundary
            Content-Type: text/html; charset=us-ascii

            <html>
              <body>
                <p>{{message}}</p>
              </body>
            </html>
            """,
        "mailmerge_database.csv": "email,message\nto@example.org,Hello world\nother@example.org,Good day\n",
        "mailmerge_server.conf": "[smtp_server]\nhost = mail.example.org\nport = 465\nsecurity = SSL/TLS\nusername = me\n",
    },
    "markdown": {
        "mailmerge_template.txt": """\
            TO: {{email}}
            SUBJECT: Testing mailmerge ✨
            FROM: Bob <bob@example.org>
            CC: Team <team@example.org>
            BCC: archive@example.org
            ATTACHMENT: attachment_3.jpg
            CONTENT-TYPE: text/markdown

            Hi, **{{name}}**,

            You can add:

            - Emphasis, aka italics, with *asterisks*.
            - Strong emphasis, aka bold, with **asterisks**.
            - Emoji: 🙂 and non-ASCII: Grüße

            ![image](attachment_3.jpg)

            Your number is {{number}}.
            """,
        "mailmerge_database.csv": "email,name,number\nmyself@example.org,Myself,17\nzoe@example.org,Zoë,42\n",
        "mailmerge_server.conf": "[smtp_server]\nhost = smtp.office365.com\nport = 587\nsecurity = XOAUTH\nusername = me@example.org\n",
        "attachment_3.jpg": (SDIST / "attachment_3.jpg").read_bytes(),
    },
    "attachments": {
        "mailmerge_template.txt": """\
            TO: {{email}}
            SUBJECT: Testing mailmerge
            FROM: My Self <myself@example.org>
            ATTACHMENT: attachment_1.txt
            ATTACHMENT: attachment_2.pdf
            ATTACHMENT: attachment_{{number}}.txt

            Hi, {{name}},

            Your number is {{number}}.
            """,
        "mailmerge_database.csv": "email,name,number\nmyself@example.org,Myself,17\nbob@example.org,Bob,1\n",
        "mailmerge_server.conf": "[smtp_server]\nhost = mail.example.org\nport = 25\nsecurity = PLAIN\nusername = me\n",
        "attachment_1.txt": (SDIST / "attachment_1.txt").read_bytes(),
        "attachment_2.pdf": (SDIST / "attachment_2.pdf").read_bytes(),
        "attachment_17.txt": (SDIST / "attachment_17.txt").read_bytes(),
    },
    "bom_database": {
        "mailmerge_template.txt": """\
            TO: {{email}}
            SUBJECT: Testing mailmerge
            FROM: My Self <myself@example.org>

            Hi, {{name}},
            """,
        "mailmerge_database.csv": (SDIST / "mailmerge_database_with_BOM.csv").read_bytes(),
        "mailmerge_server.conf": "[smtp_server]\nhost = localhost\nport = 25\nsecurity = Never\n",
    },
}


def main() -> None:
    sample = HERE / "sample"
    shutil.rmtree(sample, ignore_errors=True)
    sample.mkdir()
    subprocess.run(["mailmerge", "--sample"], cwd=sample, check=True, capture_output=True)
    folders = [sample]
    for name, files in CASES.items():
        folder = HERE / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for file_name, content in files.items():
            data = content if isinstance(content, bytes) else textwrap.dedent(content).encode()
            (folder / file_name).write_bytes(data)
        folders.append(folder)
    for folder in folders:
        done = subprocess.run(["mailmerge", "--dry-run", "--no-limit", "--output-format", "raw"],
                              cwd=folder, check=True, capture_output=True)
        (folder / "classic_output.txt").write_bytes(done.stdout)


if __name__ == "__main__":
    main()
