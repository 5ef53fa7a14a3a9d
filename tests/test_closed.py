"""Closed groups (issue 14, docs/PROTOCOL.md §8): TLS and a group secret.

Outsiders can neither read nor join: every connection is TLS 1.3 and both
ends prove the secret, bound to the TLS session, before anything else
passes. Each way in that is not a member's is tried here and must be
refused promptly, in a line, on both sides, while the members keep
talking: a wrong secret, no secret, plain TCP, TLS to an open group, a
machine in the middle that terminates TLS on both sides, a recorded
handshake replayed. Then the secret files, the plain-text port, and that
nothing secret is ever written anywhere.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import socket
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from harness import Group, NodeHandle
from procs import process_group
from wire import HOST, WireClient

from chat import outbox as outbox_module
from chat.benchclient import SharedSealer
from chat.group import MIN_SECRET, proof_key
from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.outbox import Flusher, Outbox
from chat.protocol import Error, GroupAuth, GroupHello, Hello, encode, make_hello
from chat.tls import Sealer, certificate, client_context, make_tls

SECRET = b"the test group's secret, 32 bytes"
OTHER = b"another group's secret, 32 bytes!"


async def members(group: Group, *names: str) -> list[NodeHandle]:
    """Nodes of the closed group of SECRET, each dialling the first."""
    group.secret = SECRET
    return await group.linked(*names)


async def still_chatting(a: NodeHandle, b: NodeHandle, text: str) -> None:
    assert a.node.say(text) is None
    await b.wait_text(text)


def logged(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


# --------------------------------------------------------------------------
# Who gets in, and who does not


async def test_members_chat_over_tls_and_outsiders_learn_nothing(
    group: Group, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    with trio.fail_after(10):
        alice, bob = await members(group, "alice", "bob")
        await still_chatting(alice, bob, "only members read this")
        link = alice.node.neighbours[bob.id]
        sealer = link.conn.outbox.sealer
        assert sealer is not None
        assert sealer.version() == "TLSv1.3"

        # A node with another secret: refused inside TLS, on both sides.
        eve = await group.start("eve", secret=OTHER)
        eve.dial(alice, persistent=False)
        refused = "auth_failed: the two sides do not share this group's secret"
        await eve.until(lambda: bool(logged(caplog, refused)))
        await eve.until(lambda: not eve.node.connections)
        assert eve.node.neighbours == {}
        assert alice.id not in {e.origin for e in eve.entries}  # not even a name
        assert not any("only members" in text for text in eve.texts())
        await still_chatting(bob, alice, "still here")


async def test_a_wrong_secret_learns_not_even_a_name(group: Group) -> None:
    with trio.fail_after(10):
        (alice,) = await members(group, "alice")
        outsider = await WireClient.connect(alice.port, "outsider")
        await outsider.secure(OTHER)
        # The acceptor proves first; the dialler cannot, and says so: no
        # hello has passed either way.
        shake = Handshake(
            outsider.key,
            outgoing=True,
            make_hello=lambda nonce: outsider.hello(nonce=nonce),
            group=outsider.group,
        )
        for frame in shake.start():
            await outsider.send_frame(frame)
        frames = [await outsider.receive_frame(), await outsider.receive_frame()]
        assert [type(f) for f in frames] == [GroupHello, GroupAuth]
        with pytest.raises(Exception, match="auth_failed"):
            for frame in frames:
                shake.receive(frame)
        # Sending a hello anyway gets auth_failed, and no hello back.
        await outsider.send_frame(outsider.hello())
        rest = await outsider.expect_eof()
        assert [f.code for f in rest if isinstance(f, Error)] == ["auth_failed"]
        assert not any(isinstance(f, Hello) for f in [*frames, *rest])


async def test_plain_tcp_to_a_closed_group_is_told_in_its_own_dialect(group: Group) -> None:
    with trio.fail_after(10):
        alice, bob = await members(group, "alice", "bob")
        # A node of an open group: a JSON error.
        node = await WireClient.connect(alice.port, "open node")
        await node.send_frame(node.hello())
        (error,) = await node.expect_eof()
        assert isinstance(error, Error)
        assert error.code == "auth_failed"
        assert "closed" in error.message
        # A person with netcat: a line of text, never JSON.
        person = await trio.open_tcp_stream(HOST, alice.port)
        await person.send_all(b"hello?\n")
        answer = b""
        while data := await person.receive_some():
            answer += data
        assert answer.startswith(b"*** error: auth_failed: this group is closed")
        assert answer.endswith(b"\n")
        await person.aclose()
        # A person who listens first hears it too.
        quiet = await trio.open_tcp_stream(HOST, alice.port)
        assert (await quiet.receive_some()).startswith(b"*** error: auth_failed")
        await quiet.aclose()
        await still_chatting(alice, bob, "unaffected")


async def test_an_open_node_and_a_closed_one_tell_each_other_why(
    group: Group, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    with trio.fail_after(10):
        opened = await group.start("open")
        closed = await group.start("closed", secret=SECRET)
        # The closed one dials the open one: TLS meets plain text.
        closed.dial(opened, persistent=False)
        await closed.node.dials_settled()  # (its one try has failed)
        await opened.until(lambda: opened.node.opened == 1 and not opened.node.connections)
        assert logged(caplog, "cannot join .*: it answered in plain text, not TLS")
        assert logged(caplog, "unsupported_protocol: TLS is not spoken here")
        # The open one dials the closed one: plain text meets TLS.
        opened.dial(closed, persistent=False)
        await opened.node.dials_settled()
        await closed.until(lambda: closed.node.opened == 1 and not closed.node.connections)
        assert logged(caplog, "reported an error: auth_failed: this group is closed")
        assert opened.node.neighbours == {} and closed.node.neighbours == {}


async def test_tls_to_an_open_group_is_refused(group: Group) -> None:
    with trio.fail_after(10):
        opened = await group.start("open")
        stream = await trio.open_tcp_stream(HOST, opened.port)
        tls = make_tls(SigningKey(), SECRET)
        secured = trio.SSLStream(stream, tls.client, server_side=False)
        with pytest.raises(trio.BrokenResourceError):
            await secured.do_handshake()
        await opened.until(lambda: not opened.node.connections)


# --------------------------------------------------------------------------
# Relay and replay (§8)


async def relay(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Pass bytes from ``a`` to ``b`` until either end closes."""
    try:
        while data := await a.receive_some(65536):
            await b.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_a_machine_in_the_middle_terminating_tls_cannot_join_anyone(
    group: Group, caplog: pytest.LogCaptureFixture
) -> None:
    # Mallory terminates TLS with bob (showing bob a certificate of its own)
    # and with alice, and passes every byte of the handshake on, both ways.
    caplog.set_level(logging.INFO, logger="chat")
    with trio.fail_after(15):
        alice = await group.start("alice", secret=SECRET)
        bob = await group.start("bob", secret=SECRET)
        mallory = make_tls(SigningKey(), SECRET)  # (the secret buys her nothing: see below)
        listener, port = await group.listener()
        bob.dial(port, persistent=False)
        from_bob = trio.SSLStream(await listener.accept(), mallory.server, server_side=True)
        await from_bob.do_handshake()
        to_alice = trio.SSLStream(
            await trio.open_tcp_stream(HOST, alice.port), mallory.client, server_side=False
        )
        await to_alice.do_handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, from_bob, to_alice)
            nursery.start_soon(relay, to_alice, from_bob)
            await alice.until(lambda: not alice.node.connections)
            await bob.until(lambda: not bob.node.connections)
            nursery.cancel_scope.cancel()
        # bob's proof covers the certificate he saw (mallory's), alice's the
        # one she showed: neither passes on the other side.
        assert alice.node.neighbours == {} and bob.node.neighbours == {}
        assert logged(caplog, "auth_failed: the two sides do not share this group's secret")
        # Even knowing the secret, she could only make proofs for her own
        # certificates: the relayed ones fail.


async def test_a_recorded_secured_handshake_replayed_is_refused(group: Group) -> None:
    with trio.fail_after(10):
        (alice,) = await members(group, "alice")
        member = await group.client(alice.port, "bob")  # TLS, with the secret
        sent: list[bytes] = []
        shake = Handshake(
            member.key,
            outgoing=True,
            make_hello=lambda nonce: make_hello(member.key, nonce, "bob", "peer", None, {}),
            group=member.group,
        )
        for frame in shake.start():
            sent.append(encode(frame))
            await member.send(sent[-1])
        while not shake.done:
            for answer in shake.receive(await member.receive_frame()):
                sent.append(encode(answer))
                await member.send(sent[-1])
        await alice.wait_linked(member.id)
        await member.aclose()
        await alice.wait_unlinked(member.id)

        replay = await group.client(alice.port, "replay")
        await replay.send(b"".join(sent))
        frames = await replay.expect_eof()
        assert [f.code for f in frames if isinstance(f, Error)] == ["auth_failed"]
        assert not any(isinstance(f, Hello) for f in frames)
        assert member.id not in alice.node.neighbours


# --------------------------------------------------------------------------
# The plain-text port


async def test_the_plain_text_port_takes_netcat_and_nothing_else(group: Group) -> None:
    with trio.fail_after(10):
        group.secret = SECRET
        alice = await group.start("alice", plain=True)
        bob = await group.start("bob")
        bob.dial(alice)
        await bob.wait_linked(alice)
        node, plain_port = alice.node, alice.plain_port
        person = await trio.open_tcp_stream(HOST, plain_port)
        await person.send_all(b"/nick dave\nhi from netcat\n")
        await bob.wait_text("hi from netcat")
        assert node.say("hello dave") is None
        got = b""
        while b"hello dave" not in got:
            got += await person.receive_some()
        await person.aclose()
        # A node there is refused: members use TLS on the main port.
        intruder = await WireClient.connect(plain_port, "intruder")
        await intruder.send_frame(intruder.hello())
        (error,) = await intruder.expect_eof()
        assert isinstance(error, Error)
        assert error.code == "auth_failed"
        assert "plain-text clients" in error.message


# --------------------------------------------------------------------------
# Secret files and the command


async def test_secret_new_and_what_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "group.secret"
    async with process_group() as group:
        with trio.fail_after(30):
            made = await group.start("secret", "new", str(path), label="secret new")
            assert await made.wait() == 0
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert len(path.read_bytes().strip()) >= MIN_SECRET
            again = await group.start("secret", "new", str(path), label="again")
            assert await again.wait() == 1
            assert any("never overwrites" in line for line in again.stderr.lines)
            path.chmod(0o640)
            readable = await group.start(
                "peer", "0", "--host", HOST, "--secret-file", str(path), label="readable"
            )
            assert await readable.wait() == 1
            err = "\n".join(readable.stderr.lines)
            assert f"chmod 600 {path}" in err and "Traceback" not in err
            short = tmp_path / "short"
            short.write_text("tiny\n")
            short.chmod(0o600)
            weak = await group.start(
                "hub", "0", "--host", HOST, "--secret-file", str(short), label="short"
            )
            assert await weak.wait() == 1
            assert any("too short" in line for line in weak.stderr.lines)
            plain = await group.start("hub", "0", "--host", HOST, "--plain-port", "0")
            assert await plain.wait() == 1
            assert any("--plain-port is for closed groups" in line for line in plain.stderr.lines)


async def test_nothing_secret_is_written_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_path = tmp_path / "group.secret"
    secret_path.write_bytes(SECRET + b"\n")
    secret_path.chmod(0o600)
    key = proof_key(SECRET)
    forbidden = [
        SECRET.decode(),
        key.hex(),
        base64.b64encode(key).decode().rstrip("="),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
    ]
    async with process_group() as group:
        with trio.fail_after(40):
            hub = await group.start(
                "hub", "0", "--host", HOST, "--secret-file", str(secret_path), label="hub"
            )
            await hub.wait_stderr("hub listening on")
            port = int(re.findall(r":(\d+) \(identity", "\n".join(hub.stderr.lines))[0])
            monkeypatch.setenv("TRIO_CHAT_SECRET", SECRET.decode())
            alice = await group.peer("alice", f"{HOST}:{port}", json=True)
            monkeypatch.setenv("TRIO_CHAT_SECRET", OTHER.decode())
            eve = await group.peer("eve", f"{HOST}:{port}")
            monkeypatch.delenv("TRIO_CHAT_SECRET")
            bob = await group.peer("bob", f"{HOST}:{port}")
            await alice.send_line("a line for members")
            await alice.wait_stdout("a line for members")
            await eve.wait_stderr("auth_failed")
            await bob.wait_stderr("auth_failed")
            for proc in (alice, eve, bob):
                await proc.close_stdin()
                await proc.wait()
            hub.signal(2)
            await hub.wait()
    for proc in (hub, alice, eve, bob):
        output = "\n".join([*proc.stdout.lines, *proc.stderr.lines])
        for secret in forbidden:
            assert secret not in output, proc.label


def test_a_certificate_is_for_the_run_key() -> None:
    run = SigningKey()
    cert_pem, key_pem = certificate(run)
    cert = x509.load_pem_x509_certificate(cert_pem)
    public = cert.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public == run.public
    assert cert.subject == cert.issuer  # self-signed
    assert b"PRIVATE KEY" in key_pem


# --------------------------------------------------------------------------
# The record layer


async def _sealers(client_kind: type[Sealer] = Sealer) -> tuple[Sealer, Sealer]:
    """A hub's and a member's record layers, through their handshake."""
    tls = make_tls(SigningKey(), SECRET)
    near, far = trio.testing.memory_stream_pair()
    server, client = (
        Sealer(tls.server, server_side=True),
        client_kind(client_context(), server_side=False),
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handshake, near)
            await client.handshake(far)
    return server, client


async def test_a_close_notify_ends_what_the_sealer_opens() -> None:
    # A member that closes TLS cleanly: ssl reads its close_notify as b"";
    # that is the end of the stream, not a read to repeat (it once looped,
    # taking all memory), and nothing after it is opened.
    server, client = await _sealers()
    assert client.version() == server.version() == "TLSv1.3"
    assert server.open(client.seal(b"hello\n")) == b"hello\n"
    assert server.open(client.goodbye()) == b""
    assert server.ended
    assert server.open(b"\x17\x03\x03\x00\x20" + bytes(32)) == b""  # (after it: ignored)


@pytest.mark.parametrize("cut", [1, 337, 1000, 1 << 20])
async def test_the_sealer_opens_records_however_the_reads_cut_them(cut: int) -> None:
    # open() stops once nothing is left to read, without asking ssl once
    # more: whatever the reads' cuts (a byte, a record, across records, all
    # at once), every byte comes out once and the close_notify ends it.
    server, client = await _sealers()
    lines = [f"line {n}\n".encode() for n in range(50)]
    big = bytes(range(256)) * 400  # 100 KiB: several records, more than one read
    wire = b"".join(client.seal(line) for line in lines) + client.seal(big) + client.goodbye()
    opened = b"".join(server.open(wire[at : at + cut]) for at in range(0, len(wire), cut))
    assert opened == b"".join(lines) + big
    assert server.ended


async def test_a_sealed_record_the_kernel_took_none_of_is_sent_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A record, once sealed, has its place in the TLS sequence: when the
    # socket takes none of it (BlockingIOError), it must be written later
    # as it is, never dropped or sealed again (the member would see a bad
    # record MAC and the hub cut it off).
    server, client = await _sealers()
    near, far = socket.socketpair()
    near.setblocking(False)
    outbox = Outbox(100, 1 << 20, fd=near.fileno(), sealer=server)
    write, calls = os.write, 0

    def full_at_first(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BlockingIOError  # the socket is full: nothing taken
        return write(fd, data)

    monkeypatch.setattr(os, "write", full_at_first)
    assert outbox.put(b"one\n")  # sealed, then not taken
    assert outbox.busy  # left to a writer, which writes once the socket lets it:
    assert outbox.write_to(near.fileno())
    outbox.busy = False
    assert outbox.put(b"two\n")
    assert client.open(far.recv(65536)) == b"one\ntwo\n"
    near.close()
    far.close()


@pytest.mark.parametrize("early", [outbox_module.EARLY_SEAL, 1], ids=["all", "first"])
async def test_a_fan_out_seals_copies_then_writes_them_at_once(
    early: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flush under TLS seals outboxes' queues before writing any (the
    # writes then run back to back), up to a budget of bytes, the rest as
    # they are written; each copy must still go out in that same flush, not
    # wait in its sealed form for the next message.
    monkeypatch.setattr(outbox_module, "EARLY_SEAL", early)
    pairs = [(await _sealers(), socket.socketpair()) for _ in range(3)]
    flusher = Flusher(sealing=True)
    outboxes = []
    for (server, _), (near, far) in pairs:
        near.setblocking(False)
        far.settimeout(5)  # (what was not written fails the test, not hangs it)
        outboxes.append(Outbox(100, 1 << 20, fd=near.fileno(), flusher=flusher, sealer=server))
    for n in range(2):
        for outbox in outboxes:
            assert outbox.put(f"message {n}\n".encode())
        flusher.flush_now()
        for (_, client), (_, far) in pairs:
            assert client.open(far.recv(65536)) == f"message {n}\n".encode()
    assert not any(len(outbox) or outbox.busy for outbox in outboxes)
    for _, sockets in pairs:
        for sock in sockets:
            sock.close()


class _HoldAfterFirst(trio.abc.Stream):
    """A client's side that passes its first send (the ClientHello) and holds
    the rest (its Finished), to be sent with data in one segment."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.sends, self.held = inner, 0, b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        if self.sends == 1:
            await self.inner.send_all(data)
        else:
            self.held += bytes(data)
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_data_that_comes_with_the_handshake_is_not_left_behind() -> None:
    # A dialler's first frame may travel in the same segment as its TLS
    # Finished: the acceptor's handshake reads both, and what it read beyond
    # the handshake must reach the connection (it once waited for the next
    # segment, which never came: the dialler waits for an answer).
    tls = make_tls(SigningKey(), SECRET)
    near, far = trio.testing.memory_stream_pair()
    server, client = (
        Sealer(tls.server, server_side=True),
        Sealer(client_context(), server_side=False),
    )
    holding = _HoldAfterFirst(far)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handshake, near)
            await client.handshake(holding)
            await far.send_all(holding.held + client.seal(b'{"type":"group_hello"}\n'))
    assert server.open(b"") == b'{"type":"group_hello"}\n'


async def test_the_bench_clients_sealer_is_shared_by_two_threads_safely() -> None:
    # A node is one thread and its Sealer takes no lock; the bench's reader
    # thread opens what a client receives (and answers pings) while trio
    # seals what it sends, so its clients' SharedSealer locks: one SSL
    # object must never be in two OpenSSL calls at once. Both directions at
    # full speed in two threads, and every byte comes through in order.
    server, client = await _sealers(SharedSealer)
    lines = [f"line {n}\n".encode() for n in range(20000)]
    incoming = b"".join(server.seal(line) for line in lines)
    opened: list[bytes] = []
    sealed: list[bytes] = []

    def read() -> None:  # as the reader thread, in reads that cut records anywhere
        for start in range(0, len(incoming), 29):
            opened.append(client.open(incoming[start : start + 29]))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, read)
            for line in lines:  # as the senders, meanwhile
                sealed.append(client.seal(line))
                await trio.lowlevel.checkpoint()
    assert b"".join(opened) == b"".join(lines)
    assert server.open(b"".join(sealed)) == b"".join(lines)
