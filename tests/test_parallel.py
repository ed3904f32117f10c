"""Worker processes give exactly what one process gives: same files, same order, same problems."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmerge import check_campaign, load_campaign, preview_campaign
from mailmerge.parallel import BLOCK, IN_FLIGHT, WorkerFailed, map_rows
from mailmerge.sheet import Row

from .conftest import content, parse

ROWS = BLOCK * IN_FLIGHT * 2 + 37  # more blocks than are ever in flight, and a short last one


def people(count: int) -> list[list[str]]:
    rows = [["email", "name", "points"]]
    for i in range(count):
        if i % 97 == 5:
            rows.append([f"broken{i}@", f"Bad {i}", "1"])  # an invalid address
        elif i % 89 == 7:
            rows.append([f"p{i}@example.org", f"Skip {i}", "-1"])  # left out by `where`
        else:
            rows.append([f"p{i}@example.org", f"Zoë {i}", str(i)])
    return rows


@pytest.fixture
def campaign(basic):
    c = basic('to: "{{ name }} <{{ email }}>"\nwhere: "points|int >= 0"\n',
              html="<html><head><style>p { color: red }</style></head><body>"
                   "<p>Hi {{ name }}</p><img src=\"logo.png\"></body></html>",
              text="Hi {{ name }}, {{ points }} points\n", rows=people(ROWS))
    c.file("templates/logo.png", (Path(__file__).parent.parent / "templates" / "logo.png")
           .read_bytes())
    return load_campaign(c.folder / "campaign.yaml")


def stable(text: str) -> str:
    """A file's text with what differs from run to run (Date, Message-ID, boundaries) masked."""
    text = re.sub(r"<[^<>@\s]+@[^<>\s]+>", "<id>", text)
    text = re.sub(r"=_mm_[0-9a-f]+", "boundary", text)
    text = re.sub(r"(Date: |\"date\": \")[^\r\n\"]+", r"\1date", text)
    text = re.sub(r"(\"size\": |\.eml,)\d+", r"\1size", text)  # Message-IDs vary in length
    text = re.sub(r"\"part\": \"\d+\"", "part", text)  # parts files: one per process
    return re.sub(r"(cid:|Content-ID: <)[^\"'>\s]+", r"\1cid", text)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's text; the parts files as one, in row order: each process writes its own."""
    files = {str(p.relative_to(folder)): stable(p.read_text(encoding="utf-8"))
             for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".png"}
    lines = [line for name in [n for n in files if n.startswith("parts/")]
             for line in files.pop(name).splitlines()]
    files["parts"] = "\n".join(sorted(lines, key=lambda line: int(line[8:line.index(",")])))
    return files


def test_preview_on_two_workers_writes_what_one_process_writes(campaign, tmp_path: Path) -> None:
    one = preview_campaign(campaign, tmp_path / "one", jobs=1)
    two = preview_campaign(campaign, tmp_path / "two", jobs=2)
    assert (two.rows, two.messages, two.skipped) == (one.rows, one.messages, one.skipped)
    assert one.rows == ROWS and one.skipped > 0 and one.problems
    assert [o.row for o in two.problems] == [o.row for o in one.problems]
    assert [str(e) for o in two.problems for e in o.errors] == \
        [str(e) for o in one.problems for e in o.errors]
    first, second = snapshot(tmp_path / "one"), snapshot(tmp_path / "two")
    assert first.keys() == second.keys()
    assert first == second
    with open(tmp_path / "two" / "manifest.csv", encoding="utf-8") as handle:
        rows = [int(line["row"]) for line in csv.DictReader(handle)]
    assert rows == sorted(rows) and len(rows) == two.messages
    eml = next((tmp_path / "two").glob("00300-*.eml"))
    message = parse(eml.read_bytes())
    assert content(message, "plain") == "Hi Zoë 298, 298 points\n"
    assert "color:red" in content(message, "html").replace(" ", "")


def test_check_on_two_workers_reports_every_problem_in_sheet_order(campaign) -> None:
    seen: list[int] = []
    one = check_campaign(campaign, jobs=1)
    two = check_campaign(campaign, jobs=2, progress=lambda outcome: seen.append(outcome.row))
    assert seen == list(range(2, ROWS + 2))
    assert (two.rows, two.messages, two.skipped) == (one.rows, one.messages, one.skipped)
    assert [str(e) for o in two.problems for e in o.errors] == \
        [str(e) for o in one.problems for e in o.errors]
    assert two.problems and "is not a valid email address" in str(two.problems[0].errors[0])


def test_a_sheet_that_breaks_part_way_is_reported_after_the_rows_before_it(basic) -> None:
    c = basic()
    lines = ["email,name"] + [f"p{i}@example.org,P{i}" for i in range(300)]
    lines.insert(250, 'x@example.org,"unclosed')
    (c.folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    campaign = load_campaign(c.folder / "campaign.yaml")
    one, two = check_campaign(campaign, jobs=1), check_campaign(campaign, jobs=2)
    assert [str(e) for o in two.problems for e in o.errors] == \
        [str(e) for o in one.problems for e in o.errors]
    assert two.messages == one.messages == 249
    assert "row 251" in str(two.problems[-1].errors[0])


def numbered(count: int) -> list[Row]:
    return [Row(number=i, values={"n": i}) for i in range(2, count + 2)]


def test_results_come_back_in_order_whatever_each_row_costs() -> None:
    import time

    def work(row: Row) -> int:
        time.sleep(0.002 if row.number % 7 == 0 else 0)  # uneven work per block
        return row.number * 10

    assert list(map_rows(numbered(500), work, jobs=3)) == [n * 10 for n in range(2, 502)]


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    def work(row: Row) -> int:
        if row.number == 200:
            os._exit(3)
        return row.number

    with pytest.raises(WorkerFailed, match="exit code 3"):
        list(map_rows(numbered(400), work, jobs=2))


def test_a_bug_in_a_worker_is_raised_with_its_traceback() -> None:
    def work(row: Row) -> int:
        return 1 // (row.number - 100)

    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        list(map_rows(numbered(200), work, jobs=2))


def test_notices_from_workers_reach_the_parent() -> None:
    found: list[str] = []
    pending: list[str] = []

    def work(row: Row) -> int:
        if row.number in (10, 300):
            pending.append(f"row {row.number} looked odd")
        return row.number

    def drain() -> list[str]:
        taken = list(pending)
        pending.clear()
        return taken

    list(map_rows(numbered(400), work, jobs=2, notices=drain, on_notice=found.append))
    assert found == ["row 10 looked odd", "row 300 looked odd"]


def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    script = f"""
import os, time
from mailmerge.parallel import map_rows
from mailmerge.sheet import Row
def work(row):
    with open({str(pids)!r}, "a") as handle:
        handle.write(f"{{os.getpid()}}\\n")
    time.sleep(0.2 if row.number > 100 else 0)  # the first block is worked by the parent
    return row.number
rows = [Row(number=i, values={{}}) for i in range(2, 2000)]
for _ in map_rows(rows, work, jobs=2):
    pass
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (pids.exists() and
                                               len(set(pids.read_text().split())) >= 3):
        time.sleep(0.05)
    workers = {int(p) for p in pids.read_text().split()} - {parent.pid}
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended
                    if stat.read().split(")")[-1].split()[0] == "Z":
                        alive.discard(pid)
            except (ProcessLookupError, FileNotFoundError):
                alive.discard(pid)
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their killed parent"


def test_the_first_block_is_worked_in_this_process_and_the_rest_in_workers() -> None:
    here = os.getpid()
    assert set(map_rows(numbered(BLOCK), lambda row: os.getpid(), jobs=2)) == {here}
    pids = list(map_rows(numbered(4 * BLOCK), lambda row: os.getpid(), jobs=2))
    assert set(pids[:BLOCK]) == {here}
    assert len(set(pids[BLOCK:])) == 2 and here not in pids[BLOCK:]


def test_what_the_first_block_settled_is_the_workers_too() -> None:
    settled: list[int] = []  # as a renderer's once-per-campaign verdicts are kept

    def work(row: Row) -> int:
        if not settled:
            settled.append(row.number)
        return settled[0]

    assert set(map_rows(numbered(5 * BLOCK), work, jobs=2)) == {2}  # each worker: its own


def test_a_sheet_that_breaks_in_its_first_block_keeps_the_rows_before() -> None:
    def rows() -> Iterator[Row]:
        yield from numbered(5)
        raise ValueError("broken at row 7")

    seen: list[int] = []
    with pytest.raises(ValueError, match="row 7"):
        seen.extend(map_rows(rows(), lambda row: row.number, jobs=2))
    assert seen == [2, 3, 4, 5, 6]


def test_seen_keys_finds_every_repeat_and_nothing_else() -> None:
    from mailmerge.pipeline import SeenKeys

    seen = SeenKeys()
    keys = [f"person{i}@example.org" for i in range(50_000)]  # grows the table 6 times
    assert all(seen.add(key, row) is None for row, key in enumerate(keys, start=2))
    assert [seen.add(keys[i], 99) for i in (0, 777, 49_999)] == [2, 779, 50_001]
    assert seen.add("Person0@example.org", 100) is None  # keys come normalised


def test_a_slim_outcome_keeps_every_field_but_the_message() -> None:
    import dataclasses

    from mailmerge.errors import RowError
    from mailmerge.pipeline import Outcome
    from mailmerge.preflight import Finding, Kind

    outcome = Outcome(7, errors=(RowError("bad"),), skip="where", key="k",
                      warnings=(Finding(Kind.NO_LANG, "text", "hint"),))
    assert {f.name for f in dataclasses.fields(Outcome)} - {"built", "rendered"} == {
        "row", "errors", "skip", "key", "made", "warnings"}  # a new field: keep it in slim()
    assert outcome.slim() == outcome
