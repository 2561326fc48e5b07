"""Egress building blocks in isolation: placeholders and redaction (proxy/secrets.py), sealed
secret values (daemon/secretbox.py), the daemon<->proxy control channel (proxy/wire.py), the
[proxy] config table, placeholder minting and proxy env (daemon/container_egress.py), the
authority splitter of the addon (proxy/addon.py) and the per-sandbox account of held bodies
(proxy/state.py). Pure and fast: no daemon, no proxy process.
"""

from __future__ import annotations

import array
import base64
import contextlib
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.config import ConfigError, ProxyConfig
from daemon.container_egress import PROXY_ENV, PROXY_URL, new_placeholder
from daemon.secretbox import KEY_BYTES, NONCE_BYTES, SecretBox, SecretBoxError
from proxy import wire
from proxy.addon import _authority_host
from proxy.secrets import PLACEHOLDER_LEN, PLACEHOLDER_PREFIX, Redactor, Secret, SecretSet
from proxy.state import Held, Sandbox
from proxy.wire import MAX_MESSAGE, WireError
from sandbox.policy import parse_network_policy

# --------------------------------------------------------------------------- helpers


def ph(char: str) -> str:
    """A well-formed placeholder made of one repeated base32 character."""
    return PLACEHOLDER_PREFIX + char * 32


def basic(credential: str | bytes) -> str:
    raw = credential.encode() if isinstance(credential, str) else credential
    return "Basic " + base64.b64encode(raw).decode()


def unbasic(value: str) -> bytes:
    scheme, _, token = value.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(token, validate=True)


PH_API, PH_WILD, PH_OTHER, PH_UNKNOWN = ph("a"), ph("b"), ph("c"), ph("z")
API = Secret("API_KEY", "api.x.test", PH_API, "s3cr3t-api-value")
WILD = Secret("WILD_KEY", "*.w.test", PH_WILD, "wild-value-42")
OTHER = Secret("OTHER_KEY", "other.test", PH_OTHER, "other-value")
SECRETS = SecretSet([API, WILD, OTHER])


# --------------------------------------------------------------------------- proxy/secrets.py


def test_placeholder_constants() -> None:
    assert PLACEHOLDER_LEN == len(PLACEHOLDER_PREFIX) + 32 == len(PH_API)


def test_secretset_truthiness_and_any_for() -> None:
    assert not SecretSet([])
    assert SECRETS
    assert SECRETS.any_for("api.x.test")
    assert SECRETS.any_for("deep.a.w.test")
    assert not SECRETS.any_for("w.test")
    assert not SECRETS.any_for("nowhere.test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("no placeholder here", []),
        (f"Bearer {PH_API}", [API]),
        (f"Bearer {PH_API}".encode(), [API]),
        (f"{PH_OTHER} and {PH_API} and {PH_API}", [API, OTHER]),  # sorted, deduplicated
        (f"{PH_OTHER} {PH_API}".encode(), [API, OTHER]),
        (f"x{PH_WILD}y", [WILD]),  # found anywhere, not only on word boundaries
        (f"/path?key={PH_WILD}&b=1", [WILD]),
        (f"token {PH_UNKNOWN}", []),  # a well-formed placeholder of no secret of ours
        (f"token {PH_UNKNOWN} {PH_API}", [API]),
        (PH_API[:-1], []),  # one character short
        (PH_API.upper(), []),  # base32 body is lowercase only
        (PLACEHOLDER_PREFIX + "a" * 31 + "1", []),  # '1' is not base32
        (basic(f"user:{PH_API}"), [API]),
        (basic(f"user:{PH_API}").encode(), [API]),
        (basic(f"{PH_OTHER}:{PH_WILD}"), [WILD, OTHER]),  # sorted by placeholder
        ("basic " + basic(f"u:{PH_API}").split()[1], [API]),  # scheme is case-insensitive
        (f"  {basic(f'u:{PH_API}')}  ", [API]),  # surrounding whitespace
        (basic(f"user:{PH_UNKNOWN}"), []),
        (basic("user:password"), []),
        ("Basic !!!not-base64!!!", []),
        ("Basic", []),
        (f"Bearer {base64.b64encode(f'u:{PH_API}'.encode()).decode()}", []),  # not Basic
        (b"\xff\xfe" + PH_API.encode() + b"\x00", [API]),  # arbitrary bytes around it
    ],
)
def test_found_in(text: str | bytes, expected: list[Secret]) -> None:
    assert SECRETS.found_in(text) == expected


@pytest.mark.parametrize(
    ("host", "texts", "expected"),
    [
        ("api.x.test", [f"Bearer {PH_API}"], None),
        ("evil.test", [f"Bearer {PH_API}"], API),
        ("evil.test", [f"Bearer {PH_API}".encode()], API),
        ("x.test", [f"Bearer {PH_API}"], API),  # the parent of the secret's domain
        ("sub.api.x.test", [f"Bearer {PH_API}"], API),  # an exact domain has no subdomains
        ("a.w.test", [f"k={PH_WILD}"], None),
        ("a.b.c.w.test", [f"k={PH_WILD}"], None),  # any depth below the wildcard
        ("w.test", [f"k={PH_WILD}"], WILD),  # the wildcard's apex is not covered
        ("aw.test", [f"k={PH_WILD}"], WILD),
        ("a.w.test.evil", [f"k={PH_WILD}"], WILD),
        ("api.x.test", [basic(f"u:{PH_API}")], None),
        ("evil.test", [basic(f"u:{PH_API}")], API),
        ("api.x.test", ["ok", f"Bearer {PH_API}", f"X: {PH_OTHER}"], OTHER),
        ("api.x.test", [f"X: {PH_OTHER}", f"Y: {PH_WILD}"], OTHER),  # the first one found
        ("evil.test", [f"X: {PH_UNKNOWN}"], None),  # unknown placeholders are ignored
        ("evil.test", [], None),
        ("evil.test", ["", b""], None),
    ],
)
def test_foreign(host: str, texts: list[str | bytes], expected: Secret | None) -> None:
    assert SECRETS.foreign(host, texts) == expected


def test_foreign_sees_basic_credential_in_a_header_line() -> None:
    line = f"Authorization: {basic(f'user:{PH_API}')}"
    assert SECRETS.foreign("evil.test", [line]) == API


@pytest.mark.parametrize(
    ("host", "value", "expected", "used"),
    [
        ("api.x.test", "no placeholders", "no placeholders", []),
        ("api.x.test", f"Bearer {PH_API}", f"Bearer {API.value}", [API]),
        ("api.x.test", f"{PH_API},{PH_API}", f"{API.value},{API.value}", [API, API]),
        ("evil.test", f"Bearer {PH_API}", f"Bearer {PH_API}", []),  # foreign: left alone
        ("api.x.test", f"{PH_API} {PH_OTHER}", f"{API.value} {PH_OTHER}", [API]),
        ("other.test", f"{PH_API} {PH_OTHER}", f"{PH_API} {OTHER.value}", [OTHER]),
        ("a.w.test", f"k={PH_WILD}", f"k={WILD.value}", [WILD]),
        ("a.b.w.test", f"k={PH_WILD}", f"k={WILD.value}", [WILD]),
        ("w.test", f"k={PH_WILD}", f"k={PH_WILD}", []),
        ("api.x.test", f"t {PH_UNKNOWN}", f"t {PH_UNKNOWN}", []),
        ("api.x.test", PH_API[:-1], PH_API[:-1], []),
    ],
)
def test_substitute_plain(host: str, value: str, expected: str, used: list[Secret]) -> None:
    assert SECRETS.substitute(host, value) == (expected, used)


@pytest.mark.parametrize(
    ("host", "credential", "expected", "used"),
    [
        ("api.x.test", f"user:{PH_API}", f"user:{API.value}", [API]),
        ("api.x.test", f"{PH_API}:", f"{API.value}:", [API]),
        ("api.x.test", f"{PH_API}:{PH_API}", f"{API.value}:{API.value}", [API, API]),
        ("api.x.test", f"{PH_OTHER}:{PH_API}", f"{PH_OTHER}:{API.value}", [API]),
        ("a.w.test", f"user:{PH_WILD}", f"user:{WILD.value}", [WILD]),
        ("api.x.test", "héllo:" + PH_API, "héllo:" + API.value, [API]),  # UTF-8 user name
    ],
)
def test_substitute_inside_basic(
    host: str, credential: str, expected: str, used: list[Secret]
) -> None:
    out, got = SECRETS.substitute(host, basic(credential))
    assert out.startswith("Basic ")
    assert unbasic(out).decode() == expected
    assert got == used


@pytest.mark.parametrize(
    ("host", "value"),
    [
        ("evil.test", basic(f"user:{PH_API}")),  # foreign: the credential is not touched
        ("api.x.test", basic(f"user:{PH_UNKNOWN}")),
        ("api.x.test", basic("user:password")),
        ("api.x.test", "Basic"),
        ("api.x.test", "Basic !!!"),
        ("api.x.test", "basic " + base64.b64encode(b"u:p").decode()),
    ],
)
def test_substitute_leaves_other_basic_values_byte_identical(host: str, value: str) -> None:
    assert SECRETS.substitute(host, value) == (value, [])


def test_substitute_basic_keeps_scheme_spelling() -> None:
    value = "basic " + base64.b64encode(f"u:{PH_API}".encode()).decode()
    out, used = SECRETS.substitute("api.x.test", value)
    scheme, _, token = out.partition(" ")
    assert scheme == "basic"
    assert base64.b64decode(token) == f"u:{API.value}".encode()
    assert used == [API]


def test_substitute_basic_keeps_non_utf8_bytes() -> None:
    out, _ = SECRETS.substitute("api.x.test", basic(b"\xffuser:" + PH_API.encode()))
    assert unbasic(out) == b"\xffuser:" + API.value.encode()


def test_secret_repr_never_shows_the_value() -> None:
    for secret in (API, WILD, OTHER):
        for shown in (repr(secret), str(secret), f"{secret}", repr([secret]), repr(SECRETS)):
            assert secret.value not in shown
        assert secret.placeholder in repr(secret)


# ----- Redactor

V1 = Secret("V1", "r.test", ph("d"), "SECRET-VALUE-1")
V2 = Secret("V2", "r.test", ph("e"), "zz")
V3 = Secret("V3", "r.test", ph("f"), "Q")  # one byte: nothing is held back for it alone


@pytest.mark.parametrize(
    ("used", "body", "expected"),
    [
        ([], b"SECRET-VALUE-1", b"SECRET-VALUE-1"),
        ([V1], b"", b""),
        ([V1], b"SECRET-VALUE-1", V1.placeholder.encode()),
        ([V1], b"a SECRET-VALUE-1 b SECRET-VALUE-1", f"a {ph('d')} b {ph('d')}".encode()),
        ([V1], b"SECRET-VALUE-", b"SECRET-VALUE-"),
        ([V1, V2], b"zz SECRET-VALUE-1 zz", f"{ph('e')} {ph('d')} {ph('e')}".encode()),
        ([V3], b"QxQ", f"{ph('f')}x{ph('f')}".encode()),
        ([V1, V1], b"SECRET-VALUE-1", ph("d").encode()),
    ],
)
def test_redactor_whole(used: list[Secret], body: bytes, expected: bytes) -> None:
    assert Redactor(used).whole(body) == expected


def _stream(used: list[Secret], chunks: list[bytes]) -> bytes:
    redactor = Redactor(used)
    out = [redactor(chunk) for chunk in chunks if chunk]
    out.append(redactor(b""))
    assert redactor(b"") == b""  # nothing is left after the end-of-body flush
    return b"".join(out)


STREAM_CASES = [
    ([V1], b"head SECRET-VALUE-1 tail"),
    ([V1], b"SECRET-VALUE-1"),
    ([V1], b"SECRET-VALUE-1SECRET-VALUE-1"),
    ([V1], b"xSECRET-VALUE-SECRET-VALUE-1x"),  # a false start right before the value
    ([V1], b"short"),
    ([V1, V2], b"zz SECRET-VALUE-1 zzz zz"),
    ([V3], b"aQbQQ"),
    ([V1, V3], b"QSECRET-VALUE-1Q"),
]


@pytest.mark.parametrize(("used", "body"), STREAM_CASES)
def test_redactor_stream_every_split_point(used: list[Secret], body: bytes) -> None:
    want = Redactor(used).whole(body)
    for i in range(len(body) + 1):
        assert _stream(used, [body[:i], body[i:]]) == want, i


@pytest.mark.parametrize(("used", "body"), STREAM_CASES)
def test_redactor_stream_every_pair_of_split_points(used: list[Secret], body: bytes) -> None:
    want = Redactor(used).whole(body)
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert _stream(used, [body[:i], body[i:j], body[j:]]) == want, (i, j)


@pytest.mark.parametrize(("used", "body"), STREAM_CASES)
def test_redactor_stream_byte_by_byte(used: list[Secret], body: bytes) -> None:
    assert _stream(used, [bytes([b]) for b in body]) == Redactor(used).whole(body)


def test_redactor_holds_back_at_most_longest_minus_one() -> None:
    redactor = Redactor([V1, V2])
    keep = len(V1.value) - 1
    assert redactor(b"x" * 100) == b"x" * (100 - keep)
    assert redactor(b"") == b"x" * keep


def test_redactor_is_reusable_after_flush() -> None:
    redactor = Redactor([V1])
    first = redactor(b"SECRET-VAL") + redactor(b"UE-1") + redactor(b"")
    second = redactor(b"SECRET-VAL") + redactor(b"UE-1") + redactor(b"")
    assert first == second == V1.placeholder.encode()


def test_redactor_stream_prefix_values() -> None:
    short = Secret("S", "r.test", ph("g"), "AB")
    long = Secret("L", "r.test", ph("h"), "ABCD")
    body = b"xxABCDyy"
    want = Redactor([short, long]).whole(body)
    assert want == b"xx" + long.placeholder.encode() + b"yy"
    for i in range(len(body) + 1):
        assert _stream([short, long], [body[:i], body[i:]]) == want, i


# --------------------------------------------------------------------------- daemon/secretbox.py


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(b"k" * KEY_BYTES)


@pytest.mark.parametrize("value", ["", "x", "s3cr3t-value", "ünïcödé ✓", "v" * 8192])
def test_seal_unseal_round_trip(box: SecretBox, value: str) -> None:
    sealed = box.seal("cid/NAME", value)
    assert isinstance(sealed, bytes)
    assert len(sealed) == NONCE_BYTES + len(value.encode()) + 16  # nonce + ciphertext + tag
    assert box.unseal("cid/NAME", sealed) == value


def test_seal_uses_a_fresh_nonce(box: SecretBox) -> None:
    sealed = {box.seal("cid/NAME", "same") for _ in range(50)}
    assert len(sealed) == 50
    assert len({s[:NONCE_BYTES] for s in sealed}) == 50


def test_sealed_bytes_hold_no_plaintext(box: SecretBox) -> None:
    value = "PLAINTEXT-SECRET-VALUE-0123456789"
    sealed = box.seal("cid/NAME", value)
    assert value.encode() not in sealed
    assert value[:8].encode() not in sealed
    assert base64.b64encode(value.encode()) not in sealed
    assert b"cid/NAME" not in sealed  # the AAD is authenticated, not stored


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


SEALED = SecretBox(b"k" * KEY_BYTES).seal("c1/API_KEY", "the-value")


@pytest.mark.parametrize(
    ("aad", "sealed"),
    [
        ("c1/API_KEY", _flip(SEALED, 0)),  # nonce
        ("c1/API_KEY", _flip(SEALED, NONCE_BYTES)),  # ciphertext
        ("c1/API_KEY", _flip(SEALED, len(SEALED) - 1)),  # tag
        ("c1/API_KEY", SEALED[:-1]),  # truncated
        ("c1/API_KEY", SEALED + b"\x00"),  # extended
        ("c1/API_KEY", SEALED[:NONCE_BYTES]),  # nonce only
        ("c1/API_KEY", SEALED[:5]),  # shorter than a nonce
        ("c1/API_KEY", b""),
        ("c2/API_KEY", SEALED),  # moved to another container
        ("c1/OTHER", SEALED),  # moved to another name
        ("", SEALED),
        ("c1/API_KEY ", SEALED),
    ],
)
def test_unseal_refuses_tampered_or_moved(box: SecretBox, aad: str, sealed: bytes) -> None:
    with pytest.raises(SecretBoxError):
        box.unseal(aad, sealed)


def test_unseal_refuses_wrong_key(box: SecretBox) -> None:
    with pytest.raises(SecretBoxError):
        SecretBox(b"K" * KEY_BYTES).unseal("c1/API_KEY", SEALED)
    assert box.unseal("c1/API_KEY", SEALED) == "the-value"


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 31, b"k" * 33, b"k" * 64])
def test_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(SecretBoxError):
        SecretBox(key)


def test_open_or_create_makes_a_private_key_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    first = SecretBox.open_or_create(path)
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == KEY_BYTES
    key = path.read_bytes()
    sealed = first.seal("c/N", "v")
    second = SecretBox.open_or_create(path)
    assert path.read_bytes() == key  # not rewritten
    assert second.unseal("c/N", sealed) == "v"


def test_open_or_create_makes_distinct_keys(tmp_path: Path) -> None:
    SecretBox.open_or_create(tmp_path / "a.key")
    SecretBox.open_or_create(tmp_path / "b.key")
    assert (tmp_path / "a.key").read_bytes() != (tmp_path / "b.key").read_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601, 0o666])
def test_open_or_create_refuses_a_shared_key_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    SecretBox.open_or_create(path)
    path.chmod(mode)
    with pytest.raises(SecretBoxError, match="chmod 600"):
        SecretBox.open_or_create(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_open_or_create_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"q" * KEY_BYTES)
    path.chmod(mode)
    SecretBox.open_or_create(path)


def test_open_or_create_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real.key"
    SecretBox.open_or_create(target)
    link = tmp_path / "secret.key"
    link.symlink_to(target)
    with pytest.raises(SecretBoxError):
        SecretBox.open_or_create(link)


@pytest.mark.parametrize("size", [0, 16, 33])
def test_open_or_create_refuses_a_key_of_the_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(SecretBoxError, match="32 bytes"):
        SecretBox.open_or_create(path)


# --------------------------------------------------------------------------- proxy/wire.py


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.settimeout(2)
    b.settimeout(2)
    yield a, b
    a.close()
    b.close()


class Pipe:
    """A pipe whose ends are closed once, by the test or at teardown (never a reused fd)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self._open = {self.r, self.w}

    def close(self, fd: int) -> None:
        self._open.remove(fd)
        os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            with contextlib.suppress(OSError):
                self.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close_all()


def _all_writers_closed(read_end: int) -> bool:
    """True when no write end of the pipe is open anywhere (reading gives EOF)."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) == b""
    except BlockingIOError:
        return False


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"id": 1, "op": "ping"},
        {"id": 2, "ok": True, "stats": {"a": 1, "b": [1, 2, 3]}},
        {"id": 3, "error": "nope \u2713 \n \x00"},
        {"id": 4, "op": "attach", "policy": {"secrets": [{"value": "v" * 100_000}]}},
    ],
)
def test_wire_send_recv_json(
    pair: tuple[socket.socket, socket.socket], message: dict[str, object]
) -> None:
    a, b = pair
    wire.send(a, message)
    assert wire.recv(b) == (message, None)
    wire.send(b, message)  # both directions
    assert wire.recv(a) == (message, None)


def test_wire_one_message_per_packet(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    for i in range(5):
        wire.send(a, {"id": i})
    assert [wire.recv(b)[0]["id"] for _ in range(5)] == list(range(5))


def test_wire_encode_is_compact() -> None:
    assert wire.encode({"id": 1, "op": "ping"}) == b'{"id":1,"op":"ping"}'


def test_wire_send_with_fd(pair: tuple[socket.socket, socket.socket], pipe: Pipe) -> None:
    a, b = pair
    wire.send(a, {"id": 7, "op": "attach"}, fd=pipe.r)
    message, fd = wire.recv(b)
    assert message == {"id": 7, "op": "attach"}
    assert fd is not None and fd not in (pipe.r, pipe.w)
    try:
        os.write(pipe.w, b"through the pipe")
        assert os.read(fd, 100) == b"through the pipe"
    finally:
        os.close(fd)


def test_wire_encode_oversize() -> None:
    overhead = len(wire.encode({"v": ""}))
    fits = {"v": "x" * (MAX_MESSAGE - overhead)}
    assert len(wire.encode(fits)) == MAX_MESSAGE
    with pytest.raises(WireError, match="exceeds"):
        wire.encode({"v": "x" * (MAX_MESSAGE - overhead + 1)})


def test_wire_send_oversize_sends_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with pytest.raises(WireError):
        wire.send(a, {"v": "x" * MAX_MESSAGE})
    wire.send(a, {"id": 1})
    assert wire.recv(b) == ({"id": 1}, None)


@pytest.mark.parametrize(
    "packet",
    [
        b"not json",
        b"{",
        b'{"id": 1',
        b"\xff\xfe",
        b"[1, 2]",
        b'"string"',
        b"42",
        b"null",
        b"true",
    ],
)
def test_wire_junk_packet_is_refused_and_its_fd_closed(
    pair: tuple[socket.socket, socket.socket], pipe: Pipe, packet: bytes
) -> None:
    a, b = pair
    _send_fds(a, packet, [pipe.w])
    pipe.close(pipe.w)  # now the only write end is the one in flight
    with pytest.raises(WireError):
        wire.recv(b)
    assert _all_writers_closed(pipe.r)


@pytest.mark.parametrize("packet", [b"not json", b"[1]"])
def test_wire_junk_packet_without_fd(
    pair: tuple[socket.socket, socket.socket], packet: bytes
) -> None:
    a, b = pair
    a.send(packet)
    with pytest.raises(WireError):
        wire.recv(b)


@pytest.mark.parametrize("count", [2, 3])
def test_wire_too_many_fds_all_closed(
    pair: tuple[socket.socket, socket.socket], count: int
) -> None:
    a, b = pair
    pipes = [Pipe() for _ in range(count)]
    try:
        _send_fds(a, b'{"id": 1}', [p.w for p in pipes])
        for p in pipes:
            p.close(p.w)
        with pytest.raises(WireError):
            wire.recv(b)
        assert all(_all_writers_closed(p.r) for p in pipes)
    finally:
        for p in pipes:
            p.close_all()


def test_wire_peer_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(WireError, match="closed"):
        wire.recv(b)


def test_wire_empty_packet(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.send(b"")
    with pytest.raises(WireError, match="closed"):
        wire.recv(b)


@pytest.mark.parametrize(
    ("flags", "match"),
    [(socket.MSG_TRUNC, "truncated"), (socket.MSG_CTRUNC, "truncated")],
)
def test_wire_decode_truncated(pipe: Pipe, flags: int, match: str) -> None:
    dup = os.dup(pipe.w)  # handed to decode, which must close it
    pipe.close(pipe.w)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [dup]).tobytes())]
    with pytest.raises(WireError, match=match):
        wire.decode(b'{"id": 1}', anc, flags)
    assert _all_writers_closed(pipe.r)


def test_wire_decode_good_packet_keeps_its_fd(pipe: Pipe) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pipe.w]).tobytes())]
    assert wire.decode(b'{"id": 1}', anc, 0) == ({"id": 1}, pipe.w)
    os.write(pipe.w, b"x")  # still open
    assert os.read(pipe.r, 1) == b"x"


def test_wire_deeply_nested_packet(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.send(b"[" * 100_000)
    with pytest.raises(WireError):
        wire.recv(b)


# --------------------------------------------------------------------------- daemon/config.py


def _load(tmp_path: Path, text: str) -> config_mod.Config:
    path = tmp_path / "sandboxd.toml"
    path.write_text(text, encoding="utf-8")
    return config_mod.load(path)


def test_proxy_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "").proxy == ProxyConfig()
    assert _load(tmp_path, "[proxy]\n").proxy == ProxyConfig()
    p = ProxyConfig()
    assert p.intercept == "secrets" and p.enabled
    assert p.hosts == {} and p.allow_upstreams == [] and p.upstream_ca_bundle == ""


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ('intercept = "all"', ("intercept", "all")),
        ('intercept = "secrets"', ("intercept", "secrets")),
        ("enabled = false", ("enabled", False)),
        ("max_connections = 1", ("max_connections", 1)),
        ("max_buffered_bytes = 8388608", ("max_buffered_bytes", 8 << 20)),
        ("header_timeout_s = 0.1", ("header_timeout_s", 0.1)),
        ("idle_timeout_s = 3600", ("idle_timeout_s", 3600.0)),
        ("health_interval_s = 5", ("health_interval_s", 5.0)),
        ('hosts = {"a.test" = "127.0.0.2,::1"}', ("hosts", {"a.test": "127.0.0.2,::1"})),
        ('hosts = {"a.test" = " 127.0.0.2 , ::1 "}', ("hosts", {"a.test": " 127.0.0.2 , ::1 "})),
        ('hosts = {"a.test" = "10.0.0.1", "b.test" = "fe80::1"}', None),
        (
            'allow_upstreams = ["127.0.0.2:443", "[::1]:443"]',
            ("allow_upstreams", ["127.0.0.2:443", "[::1]:443"]),
        ),
        ('allow_upstreams = ["127.0.0.1:1", "127.0.0.1:65535"]', None),
        ("allow_upstreams = []", ("allow_upstreams", [])),
        ('upstream_ca_bundle = "/etc/ca.pem"', ("upstream_ca_bundle", "/etc/ca.pem")),
    ],
)
def test_proxy_good_values(tmp_path: Path, body: str, check: tuple[str, object] | None) -> None:
    proxy = _load(tmp_path, f"[proxy]\n{body}\n").proxy
    if check is not None:
        assert getattr(proxy, check[0]) == check[1]


@pytest.mark.parametrize(
    "body",
    [
        'intercept = "none"',
        'intercept = "ALL"',
        'intercept = ""',
        "intercept = 1",
        "memory_bytes = 0",
        "nofile = -1",
        "max_connections = 0",
        "max_head_bytes = 0",
        "max_body_bytes = -5",
        "max_buffered_bytes = 1024",
        "max_connections = 1.5",
        "max_connections = true",
        "header_timeout_s = 0",
        "header_timeout_s = 0.09",
        "idle_timeout_s = 3600.5",
        "idle_timeout_s = -1",
        "health_interval_s = 0.0",
        "health_interval_s = 100000",
        "health_interval_s = nan",
        "health_interval_s = inf",
        'health_interval_s = "2"',
        'hosts = {"a.test" = "a.example"}',
        'hosts = {"a.test" = "127.0.0.2,"}',
        'hosts = {"a.test" = ""}',
        'hosts = {"a.test" = "127.0.0.2,localhost"}',
        'hosts = {"a.test" = "256.0.0.1"}',
        'hosts = {"a.test" = 1}',
        'hosts = ["127.0.0.1"]',
        'allow_upstreams = ["127.0.0.2"]',
        'allow_upstreams = ["127.0.0.2:"]',
        'allow_upstreams = ["127.0.0.2:0"]',
        'allow_upstreams = ["127.0.0.2:65536"]',
        'allow_upstreams = ["127.0.0.2:-1"]',
        'allow_upstreams = ["127.0.0.2:https"]',
        'allow_upstreams = ["a.test:443"]',
        'allow_upstreams = [":443"]',
        'allow_upstreams = ["[a.test]:443"]',
        'allow_upstreams = ["127.0.0.2:443", "bad"]',
        "allow_upstreams = [443]",
        'allow_upstreams = "127.0.0.2:443"',
        "unknown_key = 1",
    ],
)
def test_proxy_bad_values(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError):
        _load(tmp_path, f"[proxy]\n{body}\n")


def test_proxy_allow_upstreams_superscript_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _load(tmp_path, '[proxy]\nallow_upstreams = ["127.0.0.2:\u00b2"]\n')


def test_proxy_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError):
        config_mod.load(None, {"proxy.intercept": "nope"})
    assert config_mod.load(None, {"proxy.intercept": "all"}).proxy.intercept == "all"


# ----------------------------------------------------------------- daemon/container_egress.py

PLACEHOLDER_FORMAT = re.compile(r"^sbxd_ph_[a-z2-7]{32}$")


def test_new_placeholder_format_and_uniqueness() -> None:
    made = [new_placeholder() for _ in range(1000)]
    assert all(PLACEHOLDER_FORMAT.fullmatch(p) for p in made), made[:3]
    assert len(set(made)) == 1000


def test_new_placeholder_is_found_by_the_proxy() -> None:
    p = new_placeholder()
    secret = Secret("N", "n.test", p, "v")
    assert SecretSet([secret]).found_in(f"Bearer {p}") == [secret]
    assert SecretSet([secret]).substitute("n.test", p) == ("v", [secret])


@pytest.mark.parametrize(
    "name",
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"],
)
def test_proxy_env_points_at_the_relay(name: str) -> None:
    assert PROXY_ENV[name] == PROXY_URL == "http://127.0.0.1:3128"


def test_proxy_env_has_empty_no_proxy_and_nothing_else() -> None:
    assert PROXY_ENV["NO_PROXY"] == ""
    assert PROXY_ENV["no_proxy"] == ""
    assert set(PROXY_ENV) == {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    }


# --------------------------------------------------------------------------- proxy/addon.py


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("host", ("host", None)),
        ("host:443", ("host", 443)),
        ("host:1", ("host", 1)),
        ("host:65535", ("host", 65535)),
        ("  host:443  ", ("host", 443)),
        ("[::1]:443", ("[::1]", 443)),
        ("[::1]", ("[::1]", None)),
        ("[2001:db8::1]:8443", ("[2001:db8::1]", 8443)),
        ("a.b.test:443", ("a.b.test", 443)),
        ("", ("", None)),
        ("host:", None),
        ("host:abc", None),
        ("host:999999", None),
        ("host:-1", None),
        ("host:+443", None),
        ("host: 443", None),
        ("[::1", None),
        ("[::1]:", None),
        ("[::1]x", None),
        ("[::1]:abc", None),
        ("[::1]443", None),
    ],
)
def test_authority_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert _authority_host(value) == expected


def test_authority_host_superscript_port() -> None:
    assert _authority_host("host:\u00b2") is None


def test_authority_host_out_of_range_port() -> None:
    assert _authority_host("host:99999") is None


# --------------------------------------------------------------------------- held bodies


def test_held_bodies_are_counted_per_sandbox_and_released() -> None:
    policy = parse_network_policy({"type": "allowlist", "allowed_domains": ["a.example.com"]})
    assert policy is not None
    sandbox = Sandbox("cntr_x", policy, SecretSet([]), intercept_all=False)
    one, two = Held(sandbox), Held(sandbox)
    one.set(10)
    assert two.fits(20, 30) and not two.fits(21, 30)
    two.set(20)
    assert sandbox.buffered_bytes == 30
    assert one.fits(10, 30) and not one.fits(11, 30)  # its own bytes are not counted twice
    one.set(4)
    assert sandbox.buffered_bytes == 24
    one.release()
    one.release()  # idempotent: an abandoned body may be released twice
    two.release()
    assert sandbox.buffered_bytes == 0
