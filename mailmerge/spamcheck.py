"""``check --spam``: SpamAssassin's score of a few rendered messages, with its reasons.

SpamAssassin runs locally (``spamassassin -L``: no network tests, no DNS blocklists), in
test mode, with an empty preferences file, on the exact bytes ``send`` would send; its
report gives the score and every rule that fired with its description.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from .errors import ConfigError

SPAM_TIMEOUT = 120.0
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")
_NUMBER = {name: re.compile(rf"\b{name}=(-?\d+(?:\.\d+)?)\b") for name in ("score", "required")}
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


def spam_score(data: bytes) -> SpamScore:
    """Run SpamAssassin on one message. Raises ConfigError when it cannot run."""
    program = shutil.which("spamassassin")
    if program is None:
        raise _not_installed()
    try:
        done = subprocess.run([program, "-L", "-t", "-p", "/dev/null"], input=data,
                              capture_output=True, timeout=SPAM_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"SpamAssassin did not run: {exc}",
                          hint="check that `spamassassin -V` works") from exc
    out = _CONTROL.sub("?", done.stdout.replace(b"\r\n", b"\n").decode("utf-8", "replace"))
    status = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", out, re.M)
    if done.returncode not in (0, 1) or status is None:
        error = _CONTROL.sub("?", done.stderr.decode("utf-8", "replace")).strip().splitlines()
        said = f" (exit status {done.returncode})" if done.returncode not in (0, 1) else ""
        raise ConfigError("SpamAssassin gave no verdict" + said
                          + (f": {error[-1][:200]}" if error else ""),
                          hint="check that `spamassassin -V` works")
    text = " ".join(status.group(1).split())
    return SpamScore(_number(text, "score"), _number(text, "required"), tuple(_rules(out)))


def _number(status: str, name: str) -> float:
    """The ``name=`` number of an X-Spam-Status field. Raises ConfigError when it has
    none: SpamAssassin's output is not what this reads."""
    found = _NUMBER[name].search(status)
    if found is None:
        raise ConfigError(f"SpamAssassin's verdict has no {name}= number: "
                          f"X-Spam-Status: {status[:120]!r}",
                          hint="check that `spamassassin -V` works and is SpamAssassin")
    return float(found.group(1))


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
            rules.append(Rule(match.group(2), float(match.group(1)), match.group(3).strip()))
        elif rules and line.startswith(" " * 10) and line.strip():
            last = rules[-1]
            rules[-1] = Rule(last.name, last.points, f"{last.description} {line.strip()}")
        elif rules and not line.strip():
            break
    return rules
