"""The proxy's directory and CA (proxy/ca.py, proxy/confdir.py): root's, read by the proxy's
group, and nothing root does there follows a link the proxy (or anyone) planted."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs
from mitmproxy.options import CONF_BASENAME

from daemon import egress_proxy as egress
from daemon.egress_proxy import EgressUnavailable
from proxy import ca, confdir
from proxy.confdir import UnsafeConfdir

pytestmark = pytest.mark.root

PROXY = (4000011, 4000012)  # stands for sandboxd-proxy (uid, gid); no account needed
STRANGER = 4000013
NAMES = (ca.KEY_FILE, ca.CERT_FILE, ca.DHPARAM_FILE, ca.UPSTREAM_BUNDLE)


def _as(uid: int, gid: int, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
         "/usr/bin/python3", "-I", "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory other uids can reach (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="sbxd-ca-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root file (think /etc/shadow) that no operation in the proxy's dir may reach."""
    path = tmp_path / "shadow"
    path.write_bytes(b"root:secret\n")
    path.chmod(0o600)
    return path


def _untouched(victim: Path) -> None:
    assert _owner_mode(victim) == (0, 0, 0o600)
    assert victim.read_bytes() == b"root:secret\n"


def _old_layout(directory: Path) -> None:
    """The directory as the previous code left it: all of it the proxy user's."""
    ca.ensure_ca(directory, PROXY[1])
    (directory / ca.DHPARAM_FILE).write_bytes(certs.DEFAULT_DHPARAM)
    for path in (directory, *(directory / n for n in (ca.KEY_FILE, ca.CERT_FILE))):
        os.chown(path, *PROXY)
    os.chown(directory / ca.DHPARAM_FILE, *PROXY)
    directory.chmod(0o700)
    (directory / ca.KEY_FILE).chmod(0o600)


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL in its xattr form (version 2; tag, permissions, id)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_mitmproxy_reads_the_names_we_write() -> None:
    assert f"{CONF_BASENAME}-ca.pem" == ca.KEY_FILE
    assert f"{CONF_BASENAME}-dhparam.pem" == ca.DHPARAM_FILE


def test_a_new_ca_is_roots_and_its_group_reads_it(tmp_path: Path) -> None:
    directory = tmp_path / "proxy"
    cert_path = ca.ensure_ca(directory, PROXY[1])
    assert cert_path == directory / ca.CERT_FILE
    assert _owner_mode(directory) == (0, PROXY[1], 0o750)
    assert _owner_mode(directory / ca.KEY_FILE) == (0, PROXY[1], 0o640)
    assert _owner_mode(cert_path) == (0, PROXY[1], 0o644)
    assert sorted(os.listdir(directory)) == sorted([ca.KEY_FILE, ca.CERT_FILE])  # no temp left
    pem = (directory / ca.KEY_FILE).read_bytes()
    serialization.load_pem_private_key(pem, None)
    assert (
        x509.load_pem_x509_certificates(pem)[0].public_bytes(serialization.Encoding.PEM)
        == cert_path.read_bytes()
    )


def test_an_existing_ca_is_kept_as_it_is(tmp_path: Path) -> None:
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    before = {n: (directory / n).stat() for n in (ca.KEY_FILE, ca.CERT_FILE)}
    ca.ensure_ca(directory, PROXY[1])
    for name, st in before.items():
        now = (directory / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name


def test_the_proxy_reads_but_writes_nothing_and_a_stranger_gets_nothing(open_tmp: Path) -> None:
    directory = open_tmp / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    key = directory / ca.KEY_FILE
    reads = f"print(open({str(key)!r}, 'rb').read(11))"
    assert _as(*PROXY, reads).stdout.strip() == "b'-----BEGIN '"
    for code in (
        reads,
        f"import os; os.listdir({str(directory)!r})",
        f"open({str(directory / 'planted')!r}, 'x')",
    ):
        assert "PermissionError" in _as(STRANGER, STRANGER, code).stderr, code
    for code in (
        f"open({str(key)!r}, 'r+b')",
        f"open({str(directory / 'planted')!r}, 'x')",
        f"import os; os.rename({str(key)!r}, {str(directory / 'moved')!r})",
        f"import os; os.unlink({str(directory / ca.CERT_FILE)!r})",
    ):
        assert "PermissionError" in _as(*PROXY, code).stderr, code


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "proxy").symlink_to(elsewhere)
    with pytest.raises(UnsafeConfdir, match="is a symlink, not a directory"):
        ca.ensure_ca(tmp_path / "proxy", PROXY[1])
    assert _owner_mode(elsewhere) == (0, 0, 0o700)
    assert os.listdir(elsewhere) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_symlink_in_place_of_a_file_is_never_followed(
    tmp_path: Path, victim: Path, name: str, dangling: bool
) -> None:
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    target = tmp_path / "created-through-the-link" if dangling else victim
    (directory / name).unlink(missing_ok=True)
    (directory / name).symlink_to(target)
    with pytest.raises(UnsafeConfdir, match=f"{name} in the proxy's directory is a symlink"):
        ca.ensure_ca(directory, PROXY[1])
    _untouched(victim)
    assert not (tmp_path / "created-through-the-link").exists()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("make", "kind"),
    [(_fifo, "a fifo"), (_directory, "a directory"), (_socket, "a socket")],
    ids=["fifo", "directory", "socket"],
)
def test_anything_but_a_regular_file_is_refused(
    tmp_path: Path, name: str, make: Callable[[Path], None], kind: str
) -> None:
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    (directory / name).unlink(missing_ok=True)
    make(directory / name)
    with pytest.raises(UnsafeConfdir, match=f"{name} in the proxy's directory is {kind}"):
        ca.ensure_ca(directory, PROXY[1])


def test_a_directory_of_the_previous_layout_is_taken_back(open_tmp: Path) -> None:
    """All of it the proxy user's, with ACLs that would survive a chown: root's afterwards,
    the CA kept, every file a new inode, no ACL left, the proxy reads and writes nothing."""
    directory = open_tmp / "proxy"
    _old_layout(directory)
    grant = _acl((1, 7, 0xFFFFFFFF), (2, 7, STRANGER), (4, 5, 0xFFFFFFFF), (0x10, 7, 0xFFFFFFFF),
                 (0x20, 0, 0xFFFFFFFF))  # fmt: skip
    os.setxattr(directory, "system.posix_acl_access", grant)
    os.setxattr(directory, "system.posix_acl_default", grant)
    key, cert = directory / ca.KEY_FILE, directory / ca.CERT_FILE
    pem, cert_pem = key.read_bytes(), cert.read_bytes()
    with open(key, "rb") as old_key, open(cert, "rb") as old_cert:  # no inode reused meanwhile
        ca.ensure_ca(directory, PROXY[1])
        for path, old in ((key, old_key), (cert, old_cert)):
            assert not os.path.samestat(path.stat(), os.fstat(old.fileno())), path
    assert _owner_mode(directory) == (0, PROXY[1], 0o750)
    assert os.listxattr(directory) == []
    assert (_owner_mode(key), _owner_mode(cert)) == ((0, PROXY[1], 0o640), (0, PROXY[1], 0o644))
    assert (key.read_bytes(), cert.read_bytes()) == (pem, cert_pem)
    assert os.listxattr(key) == []
    assert _as(*PROXY, f"print(len(open({str(key)!r}, 'rb').read()))").stdout.strip() == str(
        len(pem)
    )
    assert "PermissionError" in _as(*PROXY, f"open({str(directory / 'x')!r}, 'x')").stderr
    assert "PermissionError" in _as(STRANGER, STRANGER, f"open({str(key)!r}, 'rb')").stderr
    assert (
        "PermissionError" in _as(STRANGER, STRANGER, f"open({str(directory / 'x')!r}, 'x')").stderr
    )


def test_a_hard_link_in_place_of_the_certificate_is_replaced_not_written(
    tmp_path: Path, victim: Path
) -> None:
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    cert = directory / ca.CERT_FILE
    cert.unlink()
    os.link(victim, cert)
    ca.ensure_ca(directory, PROXY[1])
    _untouched(victim)
    assert cert.stat().st_nlink == 1 and b"BEGIN CERTIFICATE" in cert.read_bytes()


def test_a_hard_link_in_place_of_the_key_is_not_taken_for_one(tmp_path: Path, victim: Path) -> None:
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    (directory / ca.KEY_FILE).unlink()
    os.link(victim, directory / ca.KEY_FILE)
    with pytest.raises(UnsafeConfdir, match="not a PEM CA key"):
        ca.ensure_ca(directory, PROXY[1])
    _untouched(victim)


def test_a_key_with_another_ca_s_certificate_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    ca.ensure_ca(first, PROXY[1])
    ca.ensure_ca(second, PROXY[1])
    key_pem = (first / ca.KEY_FILE).read_bytes().split(b"-----BEGIN CERTIFICATE")[0]
    mixed = key_pem + (second / ca.CERT_FILE).read_bytes()
    (first / ca.KEY_FILE).write_bytes(mixed)
    os.chown(first / ca.KEY_FILE, *PROXY)
    with pytest.raises(UnsafeConfdir, match="the certificate is not the key's"):
        ca.ensure_ca(first, PROXY[1])


def test_write_file_replaces_a_symlink_and_leaves_its_target(tmp_path: Path, victim: Path) -> None:
    tmp_path.joinpath("d").mkdir()
    (tmp_path / "d" / "f").symlink_to(victim)
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        confdir.write_file(fd, "f", b"new", 0o644, PROXY[1])
    finally:
        os.close(fd)
    _untouched(victim)
    assert _owner_mode(tmp_path / "d" / "f") == (0, PROXY[1], 0o644)
    assert (tmp_path / "d" / "f").read_bytes() == b"new"
    assert os.listdir(tmp_path / "d") == ["f"]


# ----------------------------------------------------------------- the proxy, still root


def _enter(directory: Path, extra: bytes | None = None) -> None:
    """What proxy/main.py does before its privilege drop (it gives certifi's bundle too)."""
    files = {ca.DHPARAM_FILE: certs.DEFAULT_DHPARAM}
    if extra is not None:
        files[ca.UPSTREAM_BUNDLE] = extra
    confdir.enter(str(directory), files, ca.PUBLIC_MODE, PROXY[1])


def test_the_proxy_writes_what_mitmproxy_reads_before_it_drops_privileges(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DH parameters (mitmproxy would create them after the drop, where the proxy may not
    write) and the diagnostics bundle: root's, over links planted there, never through."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "proxy"
    ca.ensure_ca(directory, PROXY[1])
    for name in (ca.DHPARAM_FILE, ca.UPSTREAM_BUNDLE):
        (directory / name).symlink_to(victim)
    _enter(directory, b"CA BUNDLE\n")
    assert Path.cwd() == directory
    _untouched(victim)
    for name in (ca.DHPARAM_FILE, ca.UPSTREAM_BUNDLE):
        assert _owner_mode(directory / name) == (0, PROXY[1], 0o644), name
    assert (directory / ca.DHPARAM_FILE).read_bytes() == certs.DEFAULT_DHPARAM
    assert (directory / ca.UPSTREAM_BUNDLE).read_bytes() == b"CA BUNDLE\n"
    assert _from_store_as_the_proxy(directory) == 0


def _from_store_as_the_proxy(directory: Path) -> int:
    """What TlsConfig.running() does after the privilege drop, as the proxy's uid and group
    (in a fork: the interpreter may live where that uid cannot read): its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.chdir(directory)  # as the proxy does, before the drop
            os.setgroups([])
            os.setresgid(PROXY[1], PROXY[1], PROXY[1])
            os.setresuid(PROXY[0], PROXY[0], PROXY[0])
            certs.CertStore.from_store(".", CONF_BASENAME, 2048)
            status = 0 if sorted(os.listdir(".")) == sorted(NAMES) else 2
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_proxy_refuses_a_confdir_that_is_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ca.ensure_ca(tmp_path / "real", PROXY[1])
    (tmp_path / "proxy").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeConfdir, match="is a symlink, not a directory"):
        _enter(tmp_path / "proxy")
    assert not (tmp_path / "real" / ca.DHPARAM_FILE).exists()


# ----------------------------------------------------------------- the proxy's own group


def _user(name: str, uid: int, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", "/nonexistent", "/usr/sbin/nologin"))


@pytest.mark.parametrize(
    ("members", "others", "gid", "match"),
    [
        ([], [], 4000012, None),
        (["sandboxd-proxy"], [], 4000012, None),
        (["alice"], [], 4000012, "shared with alice"),
        ([], [_user("bob", 4000020, 4000012)], 4000012, "shared with bob"),
        ([], [], 0, "is shared"),
        ([], [], 65534, "is shared"),
    ],
)
def test_the_proxy_user_needs_a_group_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
    members: list[str],
    others: list[pwd.struct_passwd],
    gid: int,
    match: str | None,
) -> None:
    """Its group reads the CA key: a group anyone else has or is in would share the key."""
    me = _user("sandboxd-proxy", 4000011, gid)
    group = grp.struct_group(("sandboxd-proxy", "x", gid, members))
    monkeypatch.setattr(grp, "getgrgid", lambda _gid: group)
    monkeypatch.setattr(pwd, "getpwall", lambda: [me, *others])
    if match is None:
        egress.refuse_shared(me)
    else:
        with pytest.raises(EgressUnavailable, match=match):
            egress.refuse_shared(me)
