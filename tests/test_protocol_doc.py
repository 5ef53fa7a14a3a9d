"""docs/PROTOCOL.md §10 is true: its test vectors, recomputed here.

An independent implementation is to be built from the document alone, so
the document's bytes must be the implementation's bytes. Each vector is
recomputed twice where it can be: with this project's code, and with the
primitives alone as the document describes them (hashlib, base64 and
pyca ``cryptography``'s Ed25519), so a mistake in either shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.group import proof, proof_key
from chat.handshake import proof_message
from chat.identity import certificate, voucher, who_of
from chat.keys import SigningKey, b64, fingerprint, node_id
from chat.parse import parse_frame
from chat.private import BoxKey, Sealed, seal
from chat.protocol import Event, Hello, make_event, make_hello

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def block(name: str) -> list[str]:
    """The lines of the fenced block labelled ``name`` in §10."""
    found = re.search(rf"```{re.escape(name)}\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert found is not None, f"no ```{name} block in {DOC}"
    return found[1].splitlines()


def values(name: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in block(name) if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(seed_hex: str) -> bytes:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


VECTORS = values("vectors")
PROOFS = values("proofs")
DIALLER = block("hello-dialler")[0].encode()
ACCEPTOR = block("hello-acceptor")[0].encode()
EVENTS = [line.encode() for line in block("events")]


@pytest.mark.parametrize("who", ["alice.run", "bob.run", "alice.identity", "client.run"])
def test_keys_and_ids(who: str) -> None:
    seed = VECTORS[f"{who}.seed"]
    public = raw_public(seed)
    assert VECTORS[f"{who}.key"] == base64.urlsafe_b64encode(public).rstrip(b"=").decode()
    assert VECTORS[f"{who}.key"] == b64(SigningKey.from_seed(bytes.fromhex(seed)).public)
    node = f"{who.split('.', maxsplit=1)[0]}.node"
    if who.endswith(".run"):
        assert VECTORS[node] == hashlib.sha256(public).digest()[:16].hex() == node_id(public)


def test_the_fingerprint() -> None:
    public = raw_public(VECTORS["alice.identity.seed"])
    standard = base64.b64encode(hashlib.sha256(public).digest()).decode()
    assert VECTORS["alice.fingerprint"] == "SHA256:" + standard[:12] == fingerprint(public)


def test_the_hellos_are_what_the_code_sends() -> None:
    alice = SigningKey.from_seed(bytes.fromhex(VECTORS["alice.run.seed"]))
    bob = SigningKey.from_seed(bytes.fromhex(VECTORS["bob.run.seed"]))
    ours = make_hello(alice, b"\xa1" * 32, "alice", "peer", 8081, {})
    theirs = make_hello(bob, b"\xb2" * 32, "bob", "peer", 8082, {alice.node_id: 0})
    assert ours.raw == DIALLER
    assert theirs.raw == ACCEPTOR
    for line in (DIALLER, ACCEPTOR):
        parsed = parse_frame(line + b"\n")
        assert isinstance(parsed, Hello)
        assert parsed.raw == line


def test_the_proofs() -> None:
    # As the document spells them, from the primitives.
    digests = hashlib.sha256(DIALLER).digest() + hashlib.sha256(ACCEPTOR).digest()
    message = b"trio-chat/2 auth acceptor\n" + digests
    assert PROOFS["acceptor.message"] == message.hex()
    assert message == proof_message("acceptor", DIALLER, ACCEPTOR)
    bob = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["bob.run.seed"]))
    alice = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["alice.run.seed"]))
    assert PROOFS["acceptor.sig"] == b64(bob.sign(message))
    assert PROOFS["dialler.sig"] == b64(alice.sign(b"trio-chat/2 auth dialler\n" + digests))
    # And each verifies with the key of its sender's hello.
    bob_key = Ed25519PublicKey.from_public_bytes(unb64url(json.loads(ACCEPTOR)["key"]))
    bob_key.verify(unb64url(PROOFS["acceptor.sig"]), message)


@pytest.mark.parametrize("index", range(4))
def test_each_event_verifies_as_documented(index: int) -> None:
    line = EVENTS[index]
    tail = re.search(rb',"sig":"([A-Za-z0-9_-]{86})"\}\Z', line)
    assert tail is not None
    signed = b"trio-chat/2 event\n" + line[: tail.start()]
    members = json.loads(line)
    public = unb64url(members["key"])
    assert members["origin"] == hashlib.sha256(public).digest()[:16].hex()
    Ed25519PublicKey.from_public_bytes(public).verify(unb64url(tail[1].decode()), signed)
    event = parse_frame(line + b"\n")
    assert isinstance(event, Event)
    assert event.signed() == signed


def test_the_events_are_what_the_code_makes() -> None:
    alice = SigningKey.from_seed(bytes.fromhex(VECTORS["alice.run.seed"]))
    identity = SigningKey.from_seed(bytes.fromhex(VECTORS["alice.identity.seed"]))
    bob = SigningKey.from_seed(bytes.fromhex(VECTORS["bob.run.seed"]))
    client = SigningKey.from_seed(bytes.fromhex(VECTORS["client.run.seed"]))
    made = [
        make_event("join", alice, 1, 1763700000.5, "alice", extra=certificate(identity, alice)),
        make_event("msg", alice, 2, 1763700001.25, "alice", text="h\u00e9llo \U0001f980 <3"),
        make_event("join", client, 1, 1763700002.0, "127.0.0.1:50000", extra=voucher(bob, client)),
        make_event(
            "react",
            alice,
            3,
            1763700003.0,
            "alice",
            extra={"to": f"{alice.node_id}:2", "emoji": "+1"},
        ),
    ]
    assert [event.raw for event in made] == [line + b"\n" for line in EVENTS]
    # The certificate and the voucher say who is who (§4).
    join, _, hosted, _ = (parse_frame(line + b"\n") for line in EVENTS)
    assert isinstance(join, Event) and isinstance(hosted, Event)
    assert who_of(join).fingerprint == VECTORS["alice.fingerprint"]
    assert who_of(join).person
    assert who_of(hosted).host == VECTORS["bob.node"]
    assert not who_of(hosted).person


def test_the_group_proofs() -> None:
    # §8, from the primitives as the document spells them.
    group = values("group")
    secret = group["secret"].encode()
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"trio-chat/2 group", info=b"proof key"
    ).derive(secret)
    assert group["key"] == key.hex() == proof_key(secret).hex()
    nonces = unb64url(group["nonce.dialler"]) + unb64url(group["nonce.acceptor"])
    cert = bytes.fromhex(group["cert.sha256"])
    for side in ("acceptor", "dialler"):
        message = b"trio-chat/2 group " + side.encode() + b"\n" + nonces + cert
        made = hmac.new(key, message, hashlib.sha256).digest()
        assert group[f"proof.{side}"] == b64(made)
        assert made == proof(key, side, nonces[:32], nonces[32:], cert)


def test_the_private_message() -> None:
    # §4 "pm", from the primitives as the document spells them.
    pm = values("pm")
    bob_box = X25519PrivateKey.from_private_bytes(bytes.fromhex(pm["bob.box.seed"]))
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(pm["eph.seed"]))
    box_public = bob_box.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    eph_public = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert pm["bob.box"] == b64(box_public)
    assert pm["eph"] == b64(eph_public)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(box_public))
    assert pm["shared"] == shared.hex()
    assert shared == bob_box.exchange(X25519PublicKey.from_public_bytes(eph_public))
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=eph_public + box_public, info=b"trio-chat/2 pm"
    ).derive(shared)
    assert pm["key"] == key.hex()
    alice, bob = VECTORS["alice.node"], VECTORS["bob.node"]
    aad = b"trio-chat/2 pm\n" + alice.encode() + b"\n" + bob.encode()
    text = "psst: \u00e0 bient\u00f4t \U0001f980"
    sealed = ChaCha20Poly1305(key).encrypt(bytes(12), text.encode(), aad)
    assert pm["box"] == b64(sealed)

    # The events are what the code makes, and the code opens the pm.
    join_line, pm_line = (line.encode() for line in block("pm-events"))
    ours = BoxKey.from_seed(bytes.fromhex(pm["bob.box.seed"]))
    bob_run = SigningKey.from_seed(bytes.fromhex(VECTORS["bob.run.seed"]))
    alice_run = SigningKey.from_seed(bytes.fromhex(VECTORS["alice.run.seed"]))
    made = seal(text, ours.public, alice, bob, eph)
    join = make_event("join", bob_run, 1, 1763700000.0, "bob", extra=ours.badge())
    sent = make_event("pm", alice_run, 4, 1763700004.0, "alice", extra=made.members(bob))
    assert (join.raw, sent.raw) == (join_line + b"\n", pm_line + b"\n")
    received = parse_frame(pm_line + b"\n")
    assert isinstance(received, Event) and not received.known
    to, opened = Sealed.of(dict(received.extra)) or ("", None)
    assert to == bob and opened is not None
    assert ours.open(opened, alice, bob) == text
    # Bound to sender and recipient: under another origin it does not open.
    assert ours.open(opened, bob, bob) is None
