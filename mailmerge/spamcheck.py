"""``check --spam``: SpamAssassin's score of a few rendered messages, with its reasons.

SpamAssassin runs locally (``spamassassin -L``: no network tests, no DNS blocklists), in
test mode, with an empty preferences file, on the exact bytes ``send`` would send; its
report gives the score and every rule that fired with its description.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import IO

from .errors import ConfigError

SPAM_TIMEOUT = 120.0
# A report is a few KB: what a broken or hostile program prints past this is not kept
MAX_REPORT = 1024 * 1024
MAX_ERRORS = 64 * 1024
# SpamAssassin in a locale with a decimal comma writes score=1,5
_POINTS = r"-?\d+(?:[.,]\d+)?"
_RULE = re.compile(rf"^\s*({_POINTS})\s+([A-Z0-9_]+)\s+(.*)$")
_NUMBER = {name: re.compile(rf"\b{name}=({_POINTS})(?![\d.,])") for name in ("score", "required")}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # not to reach the terminal


@dataclass(frozen=True)
class Rule:
    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamScore:
    """SpamAssassin's verdict on one message."""

    score: float
    required: float
    rules: tuple[Rule, ...]

    @property
    def spam(self) -> bool:
        return self.score >= self.required


def _not_installed() -> ConfigError:
    return ConfigError("`--spam` needs SpamAssassin, which is not installed here",
                       hint="install it (Debian and Ubuntu: apt-get install spamassassin; "
                            "Fedora: dnf install spamassassin; macOS: brew install "
                            "spamassassin), then run check --spam again")


@dataclass(frozen=True)
class _Run:
    """What a program printed, each stream kept up to a limit, and how it ended."""

    status: int
    head: bytes  # the start of its output, where the verdict is (X-Spam-Status)
    tail: bytes  # the rest of its output, or its last MAX_REPORT when it went on
    err: bytes
    cut: bool  # more lay between head and tail


def spam_score(data: bytes) -> SpamScore:
    """Run SpamAssassin on one message. Raises ConfigError when it cannot run."""
    program = shutil.which("spamassassin")
    if program is None:
        raise _not_installed()
    try:
        done = _run([program, "-L", "-t", "-p", "/dev/null"], data)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"SpamAssassin did not run: {exc}",
                          hint="check that `spamassassin -V` works") from exc
    head = _text(done.head)
    status = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", head, re.M)
    if done.status not in (0, 1) or status is None:
        error = _CONTROL.sub("?", done.err.decode("utf-8", "replace")).strip().splitlines()
        said = f" (exit status {done.status})" if done.status not in (0, 1) else ""
        if done.tail and not said:  # the output went on past the first MAX_REPORT
            said = (f" in the first {MAX_REPORT // 1024**2} MB of its output, which went on "
                    "(a report is a few KB)")
        raise ConfigError("SpamAssassin gave no verdict" + said
                          + (f": {error[-1][:200]}" if error else ""),
                          hint="check that `spamassassin -V` works and is SpamAssassin")
    text = " ".join(status.group(1).split())
    # the report of rules ends the output, after the message (which may be megabytes)
    report = _text(done.tail) if done.cut else _text(done.head + done.tail)
    return SpamScore(_number(text, "score"), _number(text, "required"), tuple(_rules(report)))


def _text(output: bytes) -> str:
    return _CONTROL.sub("?", output.replace(b"\r\n", b"\n").decode("utf-8", "replace"))


def _run(command: list[str], data: bytes) -> _Run:
    """Run ``command`` with ``data`` on its standard input. Keeps at most MAX_REPORT of
    its output and MAX_ERRORS of its errors, reading on past them until it ends, so that
    it never blocks on a full pipe. Raises TimeoutExpired after SPAM_TIMEOUT seconds."""
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
        assert stdin is not None and stdout is not None and stderr is not None
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            process.kill()

        timer = threading.Timer(SPAM_TIMEOUT, stop)
        errors: list[tuple[bytes, bytes, bool]] = []
        helpers = [threading.Thread(target=_feed, args=(stdin, data), daemon=True),
                   threading.Thread(target=lambda: errors.append(
                       _read_bounded(stderr, MAX_ERRORS)), daemon=True)]
        timer.start()
        try:
            for helper in helpers:
                helper.start()
            head, tail, cut = _read_bounded(stdout, MAX_REPORT)
            for helper in helpers:
                helper.join()
            status = process.wait()
        finally:
            timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(command, SPAM_TIMEOUT)
    err_head, err_tail, _ = errors[0] if errors else (b"", b"", False)
    return _Run(status, head, tail, err_head + err_tail, cut)  # the error's last line counts


def _feed(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (OSError, ValueError):  # a broken pipe, or a pipe closed when it was stopped
        pass  # it ended without reading all: what it printed says why


def _read_bounded(stream: IO[bytes], limit: int) -> tuple[bytes, bytes, bool]:
    """The first ``limit`` bytes of ``stream``, its last ``limit`` bytes after them, and
    whether more lay between (read and dropped)."""
    head = stream.read(limit)
    tail = bytearray()
    cut = False
    while chunk := stream.read(64 * 1024):
        tail += chunk
        if len(tail) > 2 * limit:
            cut = True
            del tail[:-limit]
    if len(tail) > limit:
        cut = True
        del tail[:-limit]
    return head, bytes(tail), cut


def _number(status: str, name: str) -> float:
    """The ``name=`` number of an X-Spam-Status field. Raises ConfigError when it has
    none: SpamAssassin's output is not what this reads."""
    found = _NUMBER[name].search(status)
    if found is None:
        raise ConfigError(f"SpamAssassin's verdict has no {name}= number: "
                          f"X-Spam-Status: {status[:120]!r}",
                          hint="check that `spamassassin -V` works and is SpamAssassin")
    return float(found.group(1).replace(",", "."))


def _rules(report: str) -> list[Rule]:
    """The rules of the report's "Content analysis details" table, with descriptions
    joined across their wrapped lines."""
    start = report.find("Content analysis details:")
    if start < 0:
        return []
    rules: list[Rule] = []
    lines = report[start:].splitlines()[1:]
    for line in lines:
        match = _RULE.match(line)
        if match:
            rules.append(Rule(match.group(2), float(match.group(1).replace(",", ".")),
                              match.group(3).strip()))
        elif rules and line.startswith(" " * 10) and line.strip():
            last = rules[-1]
            rules[-1] = Rule(last.name, last.points, f"{last.description} {line.strip()}")
        elif rules and not line.strip():
            break
    return rules
