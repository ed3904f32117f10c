"""Benchmark mailmerge against the classic `mailmerge` CLI (2.3.0) on one realistic campaign.

    python bench/run.py [--rows 10000] [--rss-rows 10000,100000] [--send-rows 2000] [--no-peer]

Generates a newsletter (about 16 KB of HTML, a <style> block of about 50 rules with a
media query, 5 article blocks, about 20 placeholders, conditions and a loop over the
row, a logo, a 1 KB text template, 14 columns) as CSV and .xlsx under bench/work/, then
measures and prints: `preview` and `check` messages/s against the peer's dry run on the
same rows, for that newsletter, for the same with styles that start with line-height, for
the same built on a layout it extends (written out as one template, see flatten), for the
same with a |safe cell whose markup differs on every row (preview only, at least 1x),
and for the peer's simplest test (a text body with two placeholders, twice the rows); .xlsx
rows/s; peak RSS of `check` at two sizes; the start-up of `check` on the shipped
newsletter; and sending to a local sink (bench/sink.py) without and with a 20 ms delay on
every reply. The targets printed are the dry-run issue's: preview at least 1.5x the
peer's dry run on the newsletters and 1x on plain text, check at least 5x, .xlsx at least
50,000 rows/s, memory flat, start-up under 0.3 s. The peer runs in its own virtual
environment (bench/work/peer-venv) in the same run, so every ratio compares like with like. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "bench"
PEER = HERE / "work" / "peer-venv"
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.workbooks import share_strings  # noqa: E402  (the tests' workbooks, as Excel writes them)

COLUMNS = ["email", "first_name", "last_name", "city", "country", "points", "member_since",
           "token", "plan", "language", "interests", "manager", "phone", "company"]

RULES = "\n".join(f".c{i} {{ color: #{i:02d}{i:02d}{i:02d}; padding: {i % 7}px; }}" for i in range(44))
STYLE = f"""<style>
body {{ margin: 0; background: #f3f1ec; font-family: Georgia, serif; }}
.wrap {{ max-width: 600px; margin: 0 auto; background: #ffffff; }}
h1 {{ font-size: 24px; color: #222222; }}
h2 {{ font-size: 18px; color: #c0392b; }}
p {{ font-size: 15px; line-height: 1.5; color: #333333; }}
{RULES}
@media (max-width: 480px) {{ h1 {{ font-size: 20px; }} .wrap {{ padding: 4px; }} }}
</style>"""
ARTICLE = """<div class="c{n}"><h2 class="c{m}">{title}, {{{{ city }}}}</h2>
<p class="c{k}">{text}</p>
<p>Hello {{{{ first_name }}}}, this one is for {{{{ company }}}} readers in {{{{ country }}}}.</p></div>
"""
LOREM = ("Our harvest festival returns on the second Saturday of October, with apple pressing, "
         "bread from the village bakery and a stall where the children plant their own herbs. "
         "Everything on the tables comes from farms within thirty kilometres of the shop. ") * 5
HTML = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">" + STYLE + "</head><body>"
        "<div class=\"wrap\"><img src=\"logo.png\" alt=\"Acme\" width=\"120\" height=\"40\">"
        "<h1>Hello {{ first_name }} {{ last_name }},</h1>"
        "{% if points|int > 1000 %}<p class=\"c1\">You have {{ points }} points: a free coffee!</p>"
        "{% else %}<p class=\"c2\">You have {{ points }} points.</p>{% endif %}"
        "<ul>{% for interest in interests.split(';') %}<li class=\"c3\">{{ interest }}</li>{% endfor %}</ul>"
        + "".join(ARTICLE.format(n=i, m=i + 5, k=i + 10, title=f"Article {i + 1}", text=LOREM)
                  for i in range(5))
        + "<p class=\"c4\">Plan {{ plan }}, language {{ language }}, since {{ member_since }}; "
          "your manager {{ manager }} ({{ phone }}).</p>"
          "<p><a href=\"https://acme.example/u/{{ token }}\">Unsubscribe</a></p></div></body></html>")
TEXT = ("Hello {{ first_name }} {{ last_name }},\n\n"
        "{% if points|int > 1000 %}You have {{ points }} points: a free coffee!\n"
        "{% else %}You have {{ points }} points.\n{% endif %}"
        "Interests: {{ interests }}\n\n" + LOREM[:700] + "\n\nUnsubscribe: https://acme.example/u/{{ token }}\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The same newsletter with styles that start with line-height, as most real ones do: the
# inlined style="line-height..." of every paragraph once cost check more than the rest.
HTML_LINE_HEIGHT = HTML.replace("p {{ font-size: 15px; line-height: 1.5; color: #333333; }}"
                                .replace("{{", "{").replace("}}", "}"),
                                "p { line-height: 1.5; font-size: 15px; color: #333333; }")
assert HTML_LINE_HEIGHT != HTML


def write_plain(folder: Path, rows: int) -> Path:
    """The classic tool's simplest test: a text body with two placeholders, To and
    Subject templated; the same for the peer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mail.txt").write_text("Hi, {{ name }},\n\nYour number is {{ number }}.\n")
    with open(folder / "people.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "number"])
        writer.writerows([f"user{i}@example.org", f"User {i}", str(i * 7)] for i in range(rows))
    (folder / "campaign.yaml").write_text(
        'name: plain\nfrom: "My Self <myself@mydomain.com>"\nto: "{{ email }}"\n'
        'subject: "Testing mailmerge {{ number }}"\ntemplates: {text: mail.txt}\n'
        "recipients: people.csv\ntransactional: true\n")
    (folder / "peer_template.txt").write_text(
        "TO: {{email}}\nSUBJECT: Testing mailmerge {{number}}\nFROM: My Self "
        "<myself@mydomain.com>\n\nHi, {{name}},\n\nYour number is {{number}}.\n")
    (folder / "peer_server.conf").write_text(
        "[smtp_server]\nhost = 127.0.0.1\nport = 2525\nsecurity = Never\nratelimit = 0\n")
    return folder / "campaign.yaml"


def write_campaign(folder: Path, rows: int, port: int = 2525, xlsx: bool = False,
                   concurrency: int = 8, html: str = HTML,
                   city: Callable[[int], str] = lambda i: "Zürich") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "templates" / "logo.png", folder / "logo.png")
    (folder / "mail.html").write_text(html)
    (folder / "mail.txt").write_text(TEXT)
    data = [[f"p{i}@example.org", f"Zoë{i}", "Ünal", city(i), "CH", str(i * 7 % 2000),
             "2020-01-01", f"t{i:06d}", "gold", "de", "tea;books;bikes", "Ann", "+41 1 234",
             "Acme"] for i in range(rows)]
    with open(folder / "people.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(data)
    sheet = "people.csv"
    if xlsx:
        import openpyxl

        workbook = openpyxl.Workbook(write_only=True)
        worksheet = workbook.create_sheet()
        worksheet.append(COLUMNS)
        for row in data:
            worksheet.append(row)
        workbook.save(folder / "people.xlsx")
        # and as Excel itself writes it: strings in the shared table, numbers and dates typed
        # (openpyxl writes strings inline, so the table is made afterwards)
        workbook = openpyxl.Workbook()
        worksheet = workbook.active
        worksheet.append(COLUMNS)
        for row in data:
            worksheet.append([*row[:5], int(row[5]), dt.date(2020, 1, 1), *row[7:]])
        workbook.save(folder / "people-typed.xlsx")
        share_strings(folder / "people-typed.xlsx", folder / "people-shared.xlsx")
        sheet = "people.xlsx"
    (folder / "campaign.yaml").write_text(f"""\
name: bench
from: "Acme News <news@acme.example>"
to: "{{{{ first_name }}}} {{{{ last_name }}}} <{{{{ email }}}}>"
subject: "{{{{ first_name }}}}, your autumn update"
templates: {{html: mail.html, text: mail.txt}}
recipients: {sheet}
unsubscribe: "https://acme.example/u/{{{{ token }}}}"
smtp: {{host: 127.0.0.1, port: {port}, security: none, timeout: 30, concurrency: {concurrency}}}
""")
    # the peer's template: the same HTML, no inlining, no text part
    (folder / "peer_template.txt").write_text(
        "TO: {{ email }}\nSUBJECT: {{ first_name }}, your autumn update\n"
        "FROM: Acme News <news@acme.example>\nContent-Type: text/html\n\n" + html + "\n")
    (folder / "peer_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n")
    return folder / "campaign.yaml"


def write_layout_campaign(folder: Path, rows: int) -> Path:
    """The newsletter with its page in a layout it extends, as most real ones are built:
    the same messages; the child only fills the layout's block, so the page is written out
    as one template and inlined once (see flatten).
    The peer's template is the same page in one file."""
    config = write_campaign(folder, rows)
    head, body = HTML.split("<body>", 1)
    assert body.endswith("</body></html>")
    (folder / "layout.html").write_text(head + "<body>{% block body %}{% endblock %}</body></html>")
    (folder / "mail.html").write_text('{% extends "layout.html" %}{% block body %}'
                                      + body.removesuffix("</body></html>") + "{% endblock %}")
    return config


def write_markup_campaign(folder: Path, rows: int) -> Path:
    """The newsletter with one cell written with ``|safe``, whose markup differs on every
    row (a per-recipient note in bold): the page is inlined once, the markup on its own
    where it stands (see pageinline). The peer renders the same template and rows."""
    return write_campaign(folder, rows, html=HTML.replace("{{ city }}", "{{ city|safe }}", 1),
                          city=lambda i: f"<b>Zürich</b>, <i>branch {i}</i>")


# Runs the command as its child and reports its wall time and peak RSS. A child forked
# from this process (large: it holds the generated sheets) would count that memory in
# its peak until it execs; the launcher is small.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None
          ) -> tuple[float, int]:
    """Wall time and peak RSS (KB) of one command (``env``: variables to add)."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=cwd,
                          capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)
    seconds, peak, code = done.stdout.split()
    if int(code) not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return float(seconds), int(peak)


def ours(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailmerge", *args]


def peer(*args: str) -> list[str]:
    return [str(PEER / "bin" / "mailmerge"), "--template", "peer_template.txt", "--database",
            "people.csv", "--config", "peer_server.conf", "--no-limit", *args]


def ensure_peer() -> bool:
    if (PEER / "bin" / "mailmerge").exists():
        return True
    subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
    done = subprocess.run([str(PEER / "bin" / "pip"), "install", "-q", "mailmerge==2.3.0"])
    return done.returncode == 0


def with_sink(delay: float, run: object) -> float:
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(HERE / "sink.py"), str(port), str(delay)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return run(port)  # type: ignore[operator]
    finally:
        sink.terminate()
        sink.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--rss-rows", default="10000,100000")
    parser.add_argument("--send-rows", type=int, default=2000)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    # what mailmerge keeps between runs (the inlined CSS; see diskmemo) starts empty here:
    # the first dry run is a template's first run, the later ones find what it kept
    os.environ["MAILMERGE_CACHE_DIR"] = str(WORK / "kept")
    results: list[tuple[str, str, str, str]] = []
    peer_rates: dict[tuple[float, int], float] = {}
    have_peer = not args.no_peer and ensure_peer()

    folder = WORK / "main"
    write_campaign(folder, args.rows, xlsx=True)
    csv_config = write_campaign(WORK / "csv", args.rows)
    # timed inside the process: the reader's own rate, not the interpreter's start-up
    reader = ("import sys, time\nfrom mailmerge.campaign import Recipients\n"
              "from mailmerge.sheet import open_sheet\n"
              "start = time.perf_counter()\n"
              "with open_sheet(Recipients(path=__import__('pathlib').Path(sys.argv[1]))) as s:\n"
              "    sum(1 for _ in s)\nprint(time.perf_counter() - start)")

    def read_seconds(name: str) -> float:
        done = subprocess.run([sys.executable, "-c", reader, str(folder / name)], check=True,
                              capture_output=True, text=True, cwd=folder)
        return float(done.stdout)

    # best of five, as the other rates are best of three: a target in rows/s, not a ratio
    # within one run, moves with whatever else the machine is doing (one read here took
    # 0.17 s to 0.27 s, fresh process after fresh process)
    xls, xls_shared = (min(read_seconds(name) for _ in range(5))
                       for name in ("people.xlsx", "people-shared.xlsx"))
    rate = lambda seconds, count=args.rows: count / seconds  # noqa: E731
    peer_dry = None

    def versus(config: Path, label: str, count: int, preview_target: float,
               check_target: float | None, theirs: float | None = None) -> float | None:
        """Our preview and check against the peer's dry run, on the same rows (``theirs``:
        its time, when it was measured on the same rows and template already)."""
        # each after a sync: the disk is still busy with what was just written and
        # deleted (the last run's tens of thousands of files), which halved the rate
        def dry_run(n: int) -> float:
            os.sync()
            return timed(ours("preview", str(config), "-o", str(WORK / f"out-{label}-{n}"),
                              "-q"), config.parent)[0]

        def check_run(env: dict[str, str] | None = None) -> float:
            os.sync()  # as for the peer below: not while the dry runs' files are written out
            return timed(ours("check", str(config), "-q"), config.parent, env)[0]

        # best of three, every kind of run taking its turn (our dry run, our check, a
        # template's first check with nothing kept from an earlier run, the peer's dry
        # run): on this noisy machine the peer's own rate moved by a third from one run
        # of the bench to the next, and runs of one kind in a row were often slowed together
        dries: list[float] = []
        checks: dict[str, list[float]] = {"usual": [], "first": []}
        peers: list[float] = []
        for n in range(3):
            dries.append(dry_run(n))
            checks["usual"].append(check_run())
            if check_target is not None:
                checks["first"].append(check_run({"MAILMERGE_NO_CACHE": "1"}))
            if have_peer and theirs is None:
                os.sync()
                peers.append(timed(peer("--dry-run", "--output-format", "raw"),
                                   config.parent)[0])
        dry, chk = min(dries), min(checks["usual"])
        theirs = min(peers) if peers else theirs
        results.append((f"{label}: preview, messages/s", f"{count / dry:.0f}",
                        f"{count / theirs:.0f}" if theirs else "-",
                        f"{theirs / dry:.2f}x (target {preview_target:g}x)" if theirs else ""))
        if check_target is not None:
            first = min(checks["first"])
            results.append((f"{label}: check, messages/s", f"{count / chk:.0f}", "",
                            f"{theirs / chk:.2f}x of the peer's dry run (target "
                            f"{check_target:g}x)" if theirs else ""))
            results.append((f"{label}: check, a template's first run", f"{count / first:.0f}",
                            "", f"{theirs / first:.2f}x" if theirs else ""))
        return theirs  # its messages stay until the end (see there)

    peer_dry = versus(csv_config, "newsletter", args.rows, 1.5, 5)
    versus(write_campaign(WORK / "lineheight", args.rows, html=HTML_LINE_HEIGHT),
           "newsletter, line-height", args.rows, 1.5, 5)
    versus(write_layout_campaign(WORK / "layout", args.rows), "newsletter on a layout",
           args.rows, 1.5, 5, peer_dry)  # the peer's page is the same, in one file
    versus(write_markup_campaign(WORK / "markup", args.rows), "newsletter, |safe markup on "
           "every row", args.rows, 1, None)
    plain_rows = 2 * args.rows
    versus(write_plain(WORK / "plain", plain_rows), "plain text", plain_rows, 1, None)
    # the same newsletter into memory (tmpfs): what the work itself costs
    shm = Path("/dev/shm")
    if shm.is_dir():
        dry_memory = min(timed(ours("preview", str(csv_config), "-o",
                                    str(shm / f"mailmerge-bench-{n}"), "-q"), folder)[0]
                         for n in range(2))
        for n in range(2):
            shutil.rmtree(shm / f"mailmerge-bench-{n}", ignore_errors=True)
        results.append(("newsletter: preview into tmpfs, messages/s",
                        f"{rate(dry_memory):.0f}", f"{rate(peer_dry):.0f}" if peer_dry else "-",
                        f"{peer_dry / dry_memory:.2f}x" if peer_dry else ""))
    results.append((".xlsx read, rows/s (inline strings)", f"{rate(xls):.0f}", "",
                    "target 50,000"))
    results.append((".xlsx read, rows/s (shared strings)", f"{rate(xls_shared):.0f}", "",
                    "target 50,000"))

    # each size checked once, for its peak memory; its rate is one run's (the rates
    # above are each the best of three)
    sizes = [int(n) for n in args.rss_rows.split(",")]
    rss = []
    for size in sizes:
        config = write_campaign(WORK / f"rss{size}", size)
        seconds, peak = timed(ours("check", str(config), "-q"), config.parent)
        rss.append(peak / 1024)
        results.append((f"check of {size:,} rows (one run), messages/s", f"{size / seconds:.0f}", "",
                        f"{size / seconds / rate(peer_dry):.2f}x of the peer's dry run"
                        if peer_dry else ""))
    results.append(("check peak RSS, MB", " / ".join(f"{r:.0f} at {n:,}" for r, n in zip(rss, sizes, strict=True)),
                    "", f"growth {rss[-1] / rss[0] - 1:+.0%} (target within 10 %, < 100 MB)"))

    # start-up: the shipped 5-row newsletter (an .xlsx sheet, inlined CSS), with the
    # package's bytecode compiled as an installed wheel has it; best of five
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mailmerge")],
                   check=True, capture_output=True)
    shipped = ROOT / "campaigns" / "newsletter.yaml"
    startup = min(timed(ours("check", str(shipped), "-q"), ROOT)[0] for _ in range(5))
    results.append(("start-up: check of the shipped newsletter (5 rows), s",
                    f"{startup:.2f}", "", "target 0.3 s"))

    for delay, label, concurrency in ((0.0, "sink", 8), (0.020, "sink +20 ms/reply", 8),
                                      (0.020, "sink +20 ms/reply, 16 connections", 16)):
        # the peer opens a connection per message: 200 of them say enough at 20 ms a reply
        peer_rows = args.send_rows if not delay else min(args.send_rows, 200)

        def run_ours(port: int, concurrency: int = concurrency) -> float:
            config = write_campaign(WORK / f"send{port}", args.send_rows, port,
                                    concurrency=concurrency)
            seconds, _ = timed(ours("send", str(config), "--yes", "-q"), config.parent)
            return args.send_rows / seconds

        def run_peer(port: int, peer_rows: int = peer_rows) -> float:
            folder = write_campaign(WORK / f"peersend{port}", peer_rows, port).parent
            seconds, _ = timed(peer("--no-dry-run", "--output-format", "raw"), folder)
            return peer_rows / seconds

        mine = with_sink(delay, run_ours)
        if have_peer and (delay, 8) not in peer_rates:
            peer_rates[delay, 8] = with_sink(delay, run_peer)
        theirs = peer_rates.get((delay, 8))
        results.append((f"send to {label}, messages/s", f"{mine:.0f}",
                        f"{theirs:.1f}" if theirs else "-",
                        f"{mine / theirs:.2f}x" if theirs else ""))

    # The written messages (about 1 GB) go only now, after every measurement. On an ext4
    # without a journal, as this machine's disk is, a deleted file's inode is not reused
    # for 60 s (300 s while its inode table block is unwritten), and every file created
    # meanwhile looks at each of them again (perf: recently_deleted, most of the time):
    # creating 10,000 files then costs the kernel 1.5 s instead of 0.14 s, and a dry run
    # timed right after another's clean-up measured that. A bench started within five
    # minutes of another pays it too.
    for written in WORK.glob("out*"):
        shutil.rmtree(written)
    width = max(len(r[0]) for r in results)
    print(f"{'':{width}}  {'mailmerge':>12}  {'peer 2.3.0':>12}  ratio")
    for name, mine_, theirs_, ratio in results:
        print(f"{name:{width}}  {mine_:>12}  {theirs_:>12}  {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
