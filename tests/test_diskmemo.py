"""What is kept on disk between runs: a value comes back only under its own key, and a
folder that cannot be used costs a miss, never an error."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mailmerge import diskmemo
from mailmerge.css import engine_fingerprint
from mailmerge.diskmemo import DiskMemo, default_folder, key_of


def test_a_value_comes_back_under_its_own_key_only(tmp_path: Path) -> None:
    memo = DiskMemo(tmp_path / "kept")
    key = key_of("inline", "<p>x</p>")
    assert memo.get(key) is None
    memo.put(key, "<p style='a'>x</p>")
    assert DiskMemo(tmp_path / "kept").get(key) == "<p style='a'>x</p>"  # another run
    assert memo.get(key_of("inline", "<p>y</p>")) is None
    # the parts are told apart, not just joined
    assert key_of("ab", "c") != key_of("a", "bc")
    assert key_of("a", "") != key_of("a")


def test_the_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    for name in ("MAILMERGE_CACHE_DIR", "MAILMERGE_NO_CACHE", "XDG_CACHE_HOME",
                 "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_folder() == tmp_path / ".cache" / "mailmerge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_folder() == tmp_path / "xdg" / "mailmerge"
    monkeypatch.setenv("MAILMERGE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_folder() == tmp_path / "mine"
    monkeypatch.setenv("MAILMERGE_NO_CACHE", "0")  # said, but not to turn it off
    assert default_folder() == tmp_path / "mine"
    monkeypatch.setenv("MAILMERGE_NO_CACHE", "1")
    assert default_folder() is None
    off = DiskMemo(None)
    off.put("k", 1)
    assert off.get("k") is None


def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path: Path) -> None:
    memo = DiskMemo(tmp_path)
    key, other = key_of("one"), key_of("two")
    (tmp_path / f"{key}.json").write_text('{"key": "', encoding="utf-8")  # cut short
    assert memo.get(key) is None
    (tmp_path / f"{key}.json").write_bytes(b"\xff\xfe")  # not text
    assert memo.get(key) is None
    (tmp_path / f"{key}.json").write_text(json.dumps([key, "x"]), encoding="utf-8")
    assert memo.get(key) is None
    # another key's entry copied under this name is not this key's value
    memo.put(other, "the other value")
    os.replace(tmp_path / f"{other}.json", tmp_path / f"{key}.json")
    assert memo.get(key) is None
    memo.put(key, "mended")
    assert memo.get(key) == "mended"


def test_a_folder_that_cannot_be_written_is_a_miss_not_an_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("", encoding="utf-8")
    memo = DiskMemo(blocked / "kept")  # under a file: no folder can be made there
    memo.put(key_of("x"), "value")
    assert memo.get(key_of("x")) is None
    assert blocked.read_text(encoding="utf-8") == ""


def test_entries_are_private_and_the_least_used_go_first(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diskmemo, "MAX_ENTRIES", 8)
    memo = DiskMemo(tmp_path / "kept")
    keys = [key_of(str(n)) for n in range(8)]
    for n, key in enumerate(keys):
        memo.put(key, n)
        os.utime(tmp_path / "kept" / f"{key}.json", ns=(n * 10**9, n * 10**9))
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "kept").iterdir()} == {0o600}
    assert memo.get(keys[0]) == 0  # the oldest, used now
    memo.put(key_of("new"), "new")  # nine: trimmed to the newest four
    left = {p.stem for p in (tmp_path / "kept").glob("*.json")}
    assert left == {keys[0], keys[6], keys[7], key_of("new")}
    assert not list((tmp_path / "kept").glob(".*"))  # no half-written files left


def test_a_folder_a_user_named_loses_none_of_their_own_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diskmemo, "MAX_ENTRIES", 4)
    theirs = [tmp_path / name for name in ("package.json", "settings.json", "a.txt")]
    for path in theirs:
        path.write_text("{}", encoding="utf-8")
        os.utime(path, ns=(0, 0))  # older than anything kept
    memo = DiskMemo(tmp_path)
    for n in range(10):
        memo.put(key_of(str(n)), n)
    assert all(path.read_text(encoding="utf-8") == "{}" for path in theirs)
    assert len(list(tmp_path.glob("*.json"))) <= 4 + 2


def test_the_inliners_fingerprint_follows_its_installed_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fakeinliner"
    package.mkdir()
    (package / "__init__.py").write_text("VERSION = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = engine_fingerprint(("fakeinliner",))
    assert engine_fingerprint(("fakeinliner",)) == before
    (package / "__init__.py").write_text("VERSION = 10\n", encoding="utf-8")  # upgraded
    assert engine_fingerprint(("fakeinliner",)) != before
    assert engine_fingerprint(("no_such_inliner",)) != engine_fingerprint(("fakeinliner",))


def test_a_result_is_worked_out_once_and_again_when_what_is_kept_is_not_one(
        tmp_path: Path) -> None:
    calls: list[str] = []

    def work() -> str:
        calls.append("x")
        return "inlined"

    memo = DiskMemo(tmp_path)
    assert memo.result(("inline", "<p>"), str, work) == "inlined"
    assert DiskMemo(tmp_path).result(("inline", "<p>"), str, work) == "inlined"
    assert calls == ["x"]
    memo.put(key_of("agrees", "<p>"), "not a yes or no")
    assert memo.result(("agrees", "<p>"), bool, lambda: True) is True
    assert memo.result(("agrees", "<p>"), bool, lambda: False) is True  # now kept
    assert DiskMemo(None).result(("inline", "<p>"), str, work) == "inlined"
    assert calls == ["x", "x"]  # nothing kept: worked out every time


def test_nothing_is_kept_when_the_inliners_files_cannot_be_looked_at(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package imported from a zip has no file of its own to look at: its upgrade
    could not be told, so nothing is kept."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "inliners.zip", "w") as archive:
        archive.writestr("zippedinliner/__init__.py", "VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "inliners.zip"))
    assert engine_fingerprint(("zippedinliner",)) is None


def test_a_folder_others_may_write_in_is_not_used(tmp_path: Path) -> None:
    """What is kept goes into messages: an entry planted in a shared folder must not."""
    folder = tmp_path / "shared"
    key = key_of("inline", "<p>")
    DiskMemo(folder).put(key, "<p>kept by its owner</p>")
    assert DiskMemo(folder).get(key) == "<p>kept by its owner</p>"
    folder.chmod(0o777)
    shared = DiskMemo(folder)
    assert shared.folder is None and shared.get(key) is None
    assert shared.result(("inline", "<p>"), str, lambda: "worked out") == "worked out"
    folder.chmod(0o700)
    if os.getuid() == 0:  # another owner can only be set by root
        os.chown(folder, 12345, 12345)
        assert DiskMemo(folder).get(key) is None
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    assert DiskMemo(tmp_path / "a-file").folder is None


def _hammer(folder: str, worker: int, rounds: int) -> list[str]:
    """Put and get shared and own keys; what comes back must be what was put."""
    diskmemo.MAX_ENTRIES = 16  # trimmed all the time, by every process at once
    memo = DiskMemo(Path(folder))
    wrong = []
    for n in range(rounds):
        shared, own = key_of("shared", str(n % 7)), key_of("own", str(worker), str(n))
        memo.put(shared, f"shared {n % 7}")
        memo.put(own, f"own {worker} {n}")
        for key, value in ((shared, f"shared {n % 7}"), (own, f"own {worker} {n}")):
            found = memo.get(key)
            if found is not None and found != value:
                wrong.append(f"{key}: {found!r}")
    return wrong


def test_processes_at_once_never_read_a_wrong_or_partial_value(tmp_path: Path) -> None:
    """Several runs share the folder (a check beside a preview): writes are whole, trims
    race each other, and no process fails or reads another key's value."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.starmap(_hammer, [(str(tmp_path), worker, 200) for worker in range(4)])
    assert results == [[], [], [], []]
    assert not list(tmp_path.glob(".*.tmp"))
    assert len(list(tmp_path.glob("*.json"))) <= 16 + 8  # trimmed, at most a few behind
