"""Pipelining across messages (RFC 2920): the next transaction's MAIL, RCPT and DATA go
out with the message before it, against a real server that sees how the client writes.

The connection is driven directly here; the runner's use of it is covered by every
sending test against the aiosmtpd server that offers PIPELINING, and by the chaos test.
"""

from __future__ import annotations

import email
import email.policy
import time

import pytest
from click.testing import Result

from mailmerge.campaign import Smtp
from mailmerge.sending.smtp import Delivery, SmtpConnection

from .smtpserver import PipeServer


def message(n: int) -> tuple[str, list[str], bytes, bool]:
    data = (f"From: a@example.org\r\nTo: p{n}@example.org\r\nSubject: {n}\r\n\r\n"
            f"message {n}\r\n.starts with a dot\r\n").encode()
    return "a@example.org", [f"p{n}@example.org"], data, False


@pytest.fixture
def server():
    server = PipeServer()
    yield server
    server.stop()


def connect(server: PipeServer) -> SmtpConnection:
    return SmtpConnection(Smtp(host="127.0.0.1", port=server.port, security="none", timeout=5),
                          None)


def send_once(server: PipeServer, envelope: tuple[str, list[str], bytes, bool] | None = None,
              timeout: float = 5) -> Delivery:
    """One message through a fresh connection; the server is stopped afterwards, and what
    it recorded can still be read."""
    try:
        connection = SmtpConnection(Smtp(host="127.0.0.1", port=server.port, security="none",
                                         timeout=timeout), None)
        delivery = connection.send(*(envelope or message(1)))
        connection.close()
    finally:
        server.stop()
    return delivery


def delivered(server: PipeServer) -> list[str]:
    return [r.rcpt_tos[0] for r in server.received]


def test_next_transaction_goes_out_with_the_message(server) -> None:
    connection = connect(server)
    first, second, third = message(1), message(2), message(3)
    assert connection.send(*first, following=lambda: second).accepted == ["p1@example.org"]
    assert connection.send(*second, following=lambda: third).accepted == ["p2@example.org"]
    assert connection.send(*third, following=lambda: None).accepted == ["p3@example.org"]
    connection.close()
    # the first two messages were followed by the next commands before their replies
    assert server.followed == [True, True, False]
    assert delivered(server) == ["p1@example.org", "p2@example.org", "p3@example.org"]
    assert server.sessions == 1
    parsed = email.message_from_bytes(server.received[1].content, policy=email.policy.default)
    assert parsed["Subject"] == "2"
    assert parsed.get_content().splitlines() == ["message 2", ".starts with a dot"]  # unstuffed


def test_without_a_following_message_nothing_waits_for_one(server) -> None:
    connection = connect(server)
    assert connection.send(*message(1)).accepted == ["p1@example.org"]
    assert connection.send(*message(2), following=lambda: None).accepted == ["p2@example.org"]
    connection.close()
    assert server.followed == [False, False]
    assert delivered(server) == ["p1@example.org", "p2@example.org"]


def first_answered(server: PipeServer, rule: str) -> Delivery:
    """Message 1 goes out with message 2's commands, and the server answers it with ``rule``;
    then message 2 is sent."""
    server.data_rule = lambda index: rule if index == 0 else None
    connection = connect(server)
    second = message(2)
    result = connection.send(*message(1), following=lambda: second)
    assert connection.send(*second).accepted == ["p2@example.org"]
    connection.close()
    return result


@pytest.mark.parametrize("reply", ["451 4.3.0 try again later", "550 5.7.1 content refused"])
def test_a_refused_message_does_not_hold_back_the_one_after_it(server, reply) -> None:
    result = first_answered(server, reply)
    assert not result.accepted and not result.reconnect
    outcome = result.deferred if reply.startswith("4") else result.refused
    assert str(outcome["p1@example.org"]) == reply
    assert server.followed == [True, False]
    assert delivered(server) == ["p2@example.org"] and server.sessions == 1


@pytest.mark.parametrize("rule", ["DROP", "421 4.3.2 closing"])
def test_a_lost_session_sends_the_pipelined_message_again_on_a_new_one(server, rule) -> None:
    result = first_answered(server, rule)
    assert result.reconnect and not result.accepted
    # a 421 is an answer (not taken); silence after the text leaves message 1 uncertain
    outcome = result.deferred if rule.startswith("421") else result.unknown
    assert list(outcome) == ["p1@example.org"]
    # message 2's MAIL, RCPT and DATA were lost with the session: it started again, once
    assert delivered(server) == ["p2@example.org"]
    assert server.sessions == 2


def test_another_message_than_the_promised_one_ends_that_session_unsent(server) -> None:
    connection = connect(server)
    connection.send(*message(1), following=lambda: message(2))
    assert connection.send(*message(3)).accepted == ["p3@example.org"]
    connection.close()
    assert delivered(server) == ["p1@example.org", "p3@example.org"]
    assert server.sessions == 2


def test_closing_after_a_promise_sends_no_quit_as_message_text(server) -> None:
    connection = connect(server)
    connection.send(*message(1), following=lambda: message(2))
    connection.close()
    assert delivered(server) == ["p1@example.org"]
    server.wait_ended(1)
    assert server.unfinished == [b""]  # the second message's DATA ended with nothing in it


def test_a_failing_following_ends_the_session_with_nothing_delivered(server) -> None:
    def broken() -> None:
        raise RuntimeError("journal unavailable")

    connection = connect(server)
    with pytest.raises(RuntimeError):
        connection.send(*message(1), following=broken)
    assert connection.send(*message(2)).accepted == ["p2@example.org"]
    connection.close()
    assert delivered(server) == ["p2@example.org"]  # the first never got its final dot


def test_a_message_too_large_for_the_server_is_not_pipelined() -> None:
    server = PipeServer(size=400)
    try:
        connection = connect(server)
        large = ("a@example.org", ["big@example.org"], b"Subject: x\r\n\r\n" + b"y" * 500, False)
        assert connection.send(*message(1), following=lambda: large).accepted
        result = connection.send(*large)
        assert result.refused["big@example.org"].code == 552
        assert connection.send(*message(3)).accepted == ["p3@example.org"]
        connection.close()
    finally:
        server.stop()
    assert server.followed[0] is False  # nothing went out after the first message
    assert delivered(server) == ["p1@example.org", "p3@example.org"]


def send_campaign(basic, server: PipeServer, rows: int) -> tuple[Result, dict[str, tuple]]:
    """Send to p0 ... p(rows-1) over one connection through the runner; the result and
    the journal. The greeting comes late, so the jobs wait in the queue meanwhile and
    the worker finds the next one ready as each message goes out."""
    from .test_send import journal_rows, make, send

    people = [["email", "name"], *[[f"p{i}@example.org", f"P {i}"] for i in range(rows)]]
    try:
        c = make(basic, server, rows=people, concurrency=1)  # type: ignore[arg-type]
        result = send(c, "-q")
    finally:
        server.stop()
    return result, journal_rows(c)


def test_a_campaign_pipelines_its_messages(basic) -> None:
    server = PipeServer(patience=0.2, greeting_delay=1.0)
    result, journal = send_campaign(basic, server, 12)
    assert result.exit_code == 0, result.output
    assert sorted(delivered(server)) == sorted(f"p{i}@example.org" for i in range(12))
    assert {state for state, *_ in journal.values()} == {"sent"}
    assert sum(server.followed) >= 6, server.followed  # most went out with the one before


def test_the_text_callback_runs_only_when_the_text_goes(server) -> None:
    server.rcpt_rule = lambda address, seen: "550 5.1.1 no such user" if "p2" in address else None
    connection = connect(server)
    calls: list[str] = []
    second, third = message(2), message(3)
    connection.send(*message(1), following=lambda: second)
    result = connection.send(*second, following=lambda: third,
                             before_text=lambda: calls.append("2"))
    assert result.refused["p2@example.org"].code == 550
    assert connection.send(*third, before_text=lambda: calls.append("3")).accepted
    connection.close()
    assert calls == ["3"]  # message 2 ended at its RCPT: nothing of it could be delivered
    assert delivered(server) == ["p1@example.org", "p3@example.org"]


def test_recipients_refused_while_sent_ahead_are_journaled_like_any_other(basic) -> None:
    """A job whose commands went out early records `sending` only before its text; one
    that ends before that still counts the attempt and keeps its Message-ID for a retry."""
    server = PipeServer(patience=0.05, greeting_delay=1.0)
    server.rcpt_rule = lambda address, seen: (
        "550 5.1.1 no such user" if address == "p3@example.org"
        else "451 4.3.0 try later" if address == "p5@example.org" and seen == 1 else None)
    result, rows = send_campaign(basic, server, 8)
    assert result.exit_code == 1, result.output  # the 550
    state, attempts, reply, message_id = rows["p3@example.org"]
    assert (state, attempts) == ("failed", 1) and "550 5.1.1" in reply and message_id
    state, attempts, _, message_id = rows["p5@example.org"]
    assert (state, attempts) == ("sent", 2)
    sent = {r.rcpt_tos[0]: r.content for r in server.received}
    assert f"Message-ID: {message_id}".encode() in sent["p5@example.org"]  # kept on retry
    assert sorted(sent) == sorted(f"p{i}@example.org" for i in range(8) if i != 3)
    assert sum(server.followed) >= 3, server.followed


@pytest.mark.parametrize("answer", ["250 2.0.0 OK", "235 what", "451 4.3.0 later"])
def test_a_data_command_not_answered_354_sends_no_text_and_is_not_sent(server,
                                                                       answer: str) -> None:
    server.data_command_reply = answer
    connection = connect(server)
    delivery = connection.send(*message(1))
    connection.close()
    assert delivery.accepted == [] and list(delivery.deferred) == ["p1@example.org"]
    reply = delivery.deferred["p1@example.org"]
    if answer.startswith("4"):
        assert str(reply) == answer
    else:
        assert reply.text == (f"protocol error: the server answered DATA with {answer}, not "
                              "354; the text was not sent")
    assert server.received == [] and server.unfinished == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "classic"])
def test_a_5xx_to_data_is_permanent_for_that_message(pipelining: bool) -> None:
    server = PipeServer(pipelining=pipelining)
    server.data_command_reply = "554 5.7.1 message refused"
    delivery = send_once(server)
    assert delivery.accepted == [] and delivery.deferred == {} and delivery.unknown == {}
    assert str(delivery.refused["p1@example.org"]) == "554 5.7.1 message refused"
    assert server.received == []


@pytest.mark.parametrize("answer, problem", [
    ("2500 OK", "the reply '2500 OK' does not start with a three-digit code"),
    ("999 what", "the reply '999 what' does not start with a three-digit code"),
    ("25O OK", "the reply '25O OK' does not start with a three-digit code"),
    ("garbage", "the reply 'garbage' does not start with a three-digit code"),
    ("250-fine\r\n550 but no", "a reply whose lines have different codes (250 and 550)"),
    ("250 " + "x" * 9000, "a reply line longer than 8192 bytes"),
])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "classic"])
def test_a_final_reply_that_is_not_one_leaves_the_message_uncertain(
        answer: str, problem: str, pipelining: bool) -> None:
    server = PipeServer(pipelining=pipelining)
    server.data_rule = lambda index: answer
    delivery = send_once(server)
    # the text went out and the server said something that is no reply: never "delivered"
    assert delivery.accepted == [] and delivery.deferred == {} and delivery.refused == {}
    assert str(delivery.unknown["p1@example.org"]) == f"no reply to the text: protocol error: {problem}"
    assert delivery.reconnect


@pytest.mark.parametrize("where", ["mail", "rcpt"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "classic"])
def test_a_reply_that_is_not_one_before_the_text_leaves_the_message_pending(
        where: str, pipelining: bool) -> None:
    server = PipeServer(pipelining=pipelining)
    if where == "mail":
        server.mail_reply = "2500 OK"
    else:
        server.rcpt_rule = lambda address, seen: "999 sure"
    delivery = send_once(server)
    assert delivery.accepted == [] and delivery.unknown == {} and delivery.refused == {}
    reply = delivery.deferred["p1@example.org"]
    assert reply.code == 0 and reply.text.startswith("protocol error: the reply ")
    # a pipelined DATA may have been granted before the session ended: with no text in it
    assert server.received == [] and server.unfinished in ([], [b""])


def test_a_reply_that_drips_forever_is_given_up_on_and_nothing_is_sent() -> None:
    server = PipeServer()
    server.mail_drip = 0.05  # a 250- line every 50 ms: no single read ever times out
    started = time.monotonic()
    delivery = send_once(server, timeout=0.3)
    took = time.monotonic() - started
    assert took < 5, took  # the whole reply is bounded: 4 x timeout
    reply = delivery.deferred["p1@example.org"]
    assert reply.code == 0 and reply.text.startswith("protocol error: a reply still going on "
                                                     "after ")
    assert reply.text.endswith(" lines and 1.2 s")
    assert server.received == [] and server.unfinished == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "classic"])
def test_a_connection_lost_before_the_final_dot_of_a_large_message_is_no_uncertainty(
        pipelining: bool) -> None:
    server = PipeServer(pipelining=pipelining)
    server.drop_in_text = 1_000_000  # of 20 MB: more than the sockets' buffers hold
    sender, recipients, _, utf8 = message(1)
    data = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 270_000
    delivery = send_once(server, (sender, recipients, data, utf8))
    # no server keeps a message whose final dot never came: send it again, no question
    assert delivery.unknown == {} and delivery.accepted == []
    assert delivery.deferred["p1@example.org"].text.startswith("connection lost")
    assert server.received == [] and len(server.unfinished) == 1
