"""Who is who: identity keys on disk, certificates, vouchers, names seen before.

A person's *identity* is an Ed25519 key kept in a file (created 0600 on
first run, refused when others can read it); it *certifies* each run key,
and ``join`` and ``nick`` events carry the certificate (§2). A plain-text
client has no key of its own: the node hosting it makes a run key for it
and *vouches* for it. Receivers check both here, and remember which
identity they saw under each name (trust on first use, like ssh's
``known_hosts``), so a newcomer under a known name with another identity
is pointed out once.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from chat.keys import SigningKey, b64, fingerprint, node_id, unb64, verify
from chat.names import skeleton
from chat.protocol import Event

CERT_CONTEXT = b"trio-chat/2 run key\n"  # an identity signs this + the run key
VOUCH_CONTEXT = b"trio-chat/2 vouch\n"  # a host's run key signs this + a client's run key
FILE_HEADER = "trio-chat identity"


class IdentityError(Exception):
    """An identity or known-names file that cannot be used; the message says how to fix it."""


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/trio-chat``, else ``~/.config/trio-chat``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trio-chat"


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} can be read by others (mode {stat.filemode(mode)}): a private key must"
            f" not be. Fix it with: chmod 600 {path}"
        )


def load_identity(path: Path | None = None) -> SigningKey:
    """The identity key in ``path`` (default: the config directory's ``identity``).

    Created on first use, mode 0600 in a 0700 directory. A file that
    others can read, or that is not an identity file, is refused.
    """
    path = path or config_dir() / "identity"
    if not path.exists():
        try:
            _create(path)
        except FileExistsError:
            pass  # another trio-chat made it at the same moment: use theirs
        except OSError as exc:
            raise IdentityError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        _check_private(path)
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header, encoded, *_ = [*path.read_text(encoding="ascii").splitlines(), "", ""]
    except (OSError, UnicodeDecodeError):
        raise IdentityError(f"{path} is not a trio-chat identity file") from None
    seed = unb64(encoded.strip(), 32)
    if header.strip() != FILE_HEADER or seed is None:
        raise IdentityError(f"{path} is not a trio-chat identity file")
    return SigningKey.from_seed(seed)


def _create(path: Path) -> None:
    """A new identity in ``path``, all at once: written to a private file
    beside it, then linked into place (which fails if ``path`` exists)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SigningKey()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"{FILE_HEADER}\n{b64(key.seed())}\n")
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# What join and nick carry (§2)


def certificate(identity: SigningKey, run: SigningKey) -> dict[str, str]:
    """The members of a person's join and nick: its identity and certificate."""
    return {"identity": b64(identity.public), "cert": b64(identity.sign(CERT_CONTEXT + run.public))}


def voucher(host: SigningKey, client: SigningKey) -> dict[str, str]:
    """The members of a hosted plain-text client's join and nick."""
    sig = host.sign(VOUCH_CONTEXT + client.public)
    return {"host": host.node_id, "host_key": b64(host.public), "vouch": b64(sig)}


@dataclass(frozen=True, slots=True)
class Who:
    """What a receiver knows of an origin from its join or nick."""

    fingerprint: str  # the identity's; a hosted client's or a hub's: its run key's
    person: bool  # an identity certified the run key
    host: str = ""  # the node that vouches for a plain-text client


def who_of(event: Event) -> Who:
    """Check the identity members of a (signature-checked) join or nick.

    A certificate or voucher that does not verify counts as none: the
    origin is then known by its run key alone.
    """
    extra = event.extra
    identity = unb64(str(extra.get("identity", "")), 32)
    cert = unb64(str(extra.get("cert", "")), 64)
    if identity and cert and verify(identity, cert, CERT_CONTEXT + event.pub):
        return Who(fingerprint(identity), person=True)
    host_key = unb64(str(extra.get("host_key", "")), 32)
    vouch = unb64(str(extra.get("vouch", "")), 64)
    if (
        host_key
        and vouch
        and extra.get("host") == node_id(host_key)
        and verify(host_key, vouch, VOUCH_CONTEXT + event.pub)
    ):
        return Who(fingerprint(event.pub), person=False, host=str(extra["host"]))
    return Who(fingerprint(event.pub), person=False)


# --------------------------------------------------------------------------
# Names seen before (trust on first use)


class KnownNames:
    """Which identity was seen under each name, in a small file (or in memory).

    Names are compared by their skeleton (:func:`chat.names.skeleton`), so a
    look-alike under a known name is caught too. The first identity seen
    under a name keeps it; :meth:`check` answers the one seen before when
    another comes, once per session and pair.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, str] = {}  # skeleton -> fingerprint
        self._warned: set[tuple[str, str]] = set()
        if path is not None and path.exists():
            try:
                for line in path.read_text(encoding="utf-8").splitlines():
                    entry = json.loads(line)
                    self._seen[skeleton(entry["name"])] = entry["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                raise IdentityError(
                    f"{path} is not a known-names file (one JSON object a line);"
                    " move it away to start afresh"
                ) from None

    def check(self, name: str, fp: str) -> str | None:
        """Note ``fp`` under ``name``; the fingerprint seen before if it differs (once)."""
        key = skeleton(name)
        before = self._seen.get(key)
        if before is None:
            self._seen[key] = fp
            self._append(name, fp)
            return None
        if before == fp or (key, fp) in self._warned:
            return None
        self._warned.add((key, fp))
        return before

    def _append(self, name: str, fp: str) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(json.dumps({"name": name, "fingerprint": fp}, ensure_ascii=False) + "\n")
        except OSError:
            self.path = None  # unwritable: remember for this run only
