"""Network policy model and host matching for the egress proxy (README, Egress).

Pure data and functions: no I/O beyond reading the public suffix list bundled with
`publicsuffixlist` (once, lazily), no logging. Imported by the daemon (validation at create)
and by the proxy (matching). Error messages never contain a secret value.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

import idna
from publicsuffixlist import PublicSuffixList

MAX_DOMAINS = 256
# A container needs a handful of credentials; 64 bounds the env, the per-request scan and the
# response-echo rewriting the proxy does for each secret.
MAX_SECRETS = 64
# Secrets travel in one request header; 8 KiB is the common per-header-line limit of servers.
MAX_SECRET_VALUE_BYTES = 8192
_MAX_NAME_CHARS = 128  # env var names are echoed in audit lines; keep them short
_MAX_ENTRY_CHARS = 1024  # bound the work done on a domain entry before IDNA

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_IPV4_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL, other controls

# Names a placeholder must never shadow: they steer the shell, loaders, interpreters, locale,
# proxies and trust stores the sandbox's plumbing relies on. Compared case-insensitively;
# `*_PROXY`, `LC_*`, `LD_*` and `SANDBOXD_*` are reserved too (is_reserved_env_name).
# Written as words: a 100-item list literal would be 100 lines after formatting.
RESERVED_ENV_NAMES: frozenset[str] = frozenset(
    """
    _ PATH HOME USER LOGNAME SHELL PWD OLDPWD HOSTNAME LANG LANGUAGE TERM TZ TZDIR TMPDIR TMP
    TEMP MAIL SHLVL IFS ENV BASH_ENV CDPATH PS1 PS2 PS4 PROMPT_COMMAND SHELLOPTS BASHOPTS
    GLOBIGNORE VIRTUAL_ENV PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONSAFEPATH PYTHONNOUSERSITE
    PYTHONUSERBASE PYTHONINSPECT PYTHONWARNINGS PYTHONIOENCODING PYTHONUNBUFFERED PYTHONUTF8
    PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX PYTHONBREAKPOINT PYTHONHASHSEED PYTHONMALLOC
    PYTHONEXECUTABLE PYTHONPLATLIBDIR PYTHONVERBOSE PYTHONDEBUG PYTHONOPTIMIZE PYTHONDEVMODE
    SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS
    NODE_OPTIONS NODE_PATH NODE_TLS_REJECT_UNAUTHORIZED GIT_SSL_CAINFO GIT_SSL_CAPATH
    GIT_SSL_NO_VERIFY GIT_SSH_COMMAND GIT_CONFIG_GLOBAL GIT_CONFIG_SYSTEM GIT_EXEC_PATH PIP_CERT
    PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST AWS_CA_BUNDLE NPM_CONFIG_CAFILE
    CARGO_HTTP_CAINFO DENO_CERT HTTPLIB2_CA_CERTS WEBSOCKET_CLIENT_CA_BUNDLE OPENSSL_CONF
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH GCONV_PATH HOSTALIASES LOCALDOMAIN RES_OPTIONS NLSPATH
    GLIBC_TUNABLES MALLOC_CONF MPLBACKEND MPLCONFIGDIR XDG_RUNTIME_DIR XDG_CONFIG_HOME
    XDG_CACHE_HOME XDG_DATA_HOME PERL5LIB PERL5OPT PERLLIB RUBYOPT RUBYLIB CLASSPATH
    JAVA_TOOL_OPTIONS _JAVA_OPTIONS JDK_JAVA_OPTIONS
    """.split()  # noqa: SIM905
)
_RESERVED_PREFIXES = ("LC_", "LD_", "SANDBOXD_")

# Deny lists on top of `is_global` (which Python 3.12.1 gets wrong for several of these).
_V4_DENY = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Inside 2000::/3 but not plain global unicast. Teredo (2001::/32, within 2001::/23) and 6to4
# (2002::/16) are denied whatever address they wrap: IANA lists neither as globally reachable.
_V6_DENY = tuple(
    ipaddress.IPv6Network(n) for n in ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20")
)


class PolicyError(ValueError):
    """Invalid policy; `param` names the field OpenAI-style, e.g.
    'network_policy.allowed_domains[2]'. str(exc) never contains a secret value."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class DomainSecret:
    name: str  # env var name
    domain: str  # canonical pattern (exact host or '*.suffix')
    value: str = field(repr=False)  # the real secret


@dataclass(frozen=True)
class NetworkPolicy:
    allowed_domains: tuple[str, ...]  # canonical patterns, de-duplicated, input order kept
    secrets: tuple[DomainSecret, ...] = ()

    def allows(self, host: str) -> bool:
        """`host` must already be canonical (canonical_host)."""
        return any(matches(pattern, host) for pattern in self.allowed_domains)

    def secrets_for(self, host: str) -> tuple[DomainSecret, ...]:
        return tuple(s for s in self.secrets if matches(s.domain, host))

    def public(self) -> dict[str, object]:
        return {"type": "allowlist", "allowed_domains": list(self.allowed_domains)}


# ---- hosts and patterns ---------------------------------------------------------------------


def is_reserved_env_name(name: str) -> bool:
    upper = name.upper()
    return (
        upper in RESERVED_ENV_NAMES
        or upper.endswith("_PROXY")
        or upper.startswith(_RESERVED_PREFIXES)
    )


def is_ip_literal(host: str) -> bool:
    """True for every spelling a resolver (inet_aton, getaddrinfo) would take as an address:
    dotted, decimal, hex, octal and short IPv4 forms, bracketed or bare IPv6, IPv4-mapped,
    zone ids (also URL-encoded '%25'), with or without one trailing dot. Numeric look-alikes
    out of range ('999.1.1.1') count too: nothing they spell is a host name."""
    h = host.strip().lower()
    h = h.removesuffix(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if ":" in h:
        try:
            ipaddress.IPv6Address(h.split("%", 1)[0])
        except ValueError:
            return False
        return True
    words = h.split(maxsplit=1)  # inet_aton stops at the first whitespace
    parts = words[0].split(".") if words else []
    return 1 <= len(parts) <= 4 and all(_IPV4_PART.fullmatch(p) for p in parts)


def _is_hostname(host: str) -> bool:
    """Lowercase ASCII, labels [a-z0-9_-]{1,63} not starting/ending with '-', <= 253,
    last label not all digits."""
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def canonical_host(host: str) -> str | None:
    """Request side (CONNECT authority, SNI, Host, absolute-form URL host): the canonical
    name, or None when the host is not an acceptable name (non-ASCII, IP literal, bad label)."""
    if not host.isascii():
        return None
    host = host.removesuffix(".").lower()
    if not host or is_ip_literal(host) or not _is_hostname(host):
        return None
    return host


def matches(pattern: str, host: str) -> bool:
    """'example.com' matches only itself; '*.example.com' any depth below, not the apex.
    Both arguments canonical."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Bundled list, ICANN section; an unknown TLD counts as public (so `*.test` is refused).
    return PublicSuffixList(only_icann=True, accept_unknown=True)


def canonical_pattern(entry: str) -> str:
    """Policy side: canonicalise an allowlist (or secret domain) entry. Unicode is converted
    to A-labels once (IDNA 2008 with UTS-46 mapping). Raises PolicyError(param='')."""

    def bad(reason: str) -> PolicyError:
        shown = entry if len(entry) <= 80 else entry[:77] + "..."
        return PolicyError(f"Invalid domain {shown!r}: {reason}.", "")

    if len(entry) > _MAX_ENTRY_CHARS:
        raise bad("too long")
    if "://" in entry:
        raise bad("give a bare host name, not a URL")
    if is_ip_literal(entry):
        raise bad("IP addresses are not allowed")
    if "/" in entry:
        raise bad("paths are not allowed")
    if ":" in entry:
        raise bad("ports are not allowed")
    wildcard = entry.startswith("*.")
    base = entry[2:] if wildcard else entry
    if entry == "*" or "*" in base:
        raise bad("'*' is only allowed as a leading '*.' label")
    base = base.removesuffix(".")
    if not base.isascii():
        try:
            base = idna.encode(base, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise bad("not a valid internationalised domain name") from None
    base = base.lower()
    if not base or "" in base.split("."):
        raise bad("empty label")
    if is_ip_literal(base):
        raise bad("IP addresses are not allowed")
    if not _is_hostname(base):
        raise bad(
            "labels must be 1-63 of [a-z0-9_-], not start or end with '-', the name at most"
            " 253 characters, and the last label not all digits"
        )
    if _public_suffixes().is_public(base):
        raise bad("a public suffix (or a top-level domain) is not allowed")
    return "*." + base if wildcard else base


# ---- parsing a create body's network_policy -------------------------------------------------


def _check_keys(obj: dict[str, object], allowed: tuple[str, ...], where: str) -> None:
    for key in sorted(k for k in obj if k not in allowed):
        shown = str(key) if len(str(key)) <= 40 else str(key)[:37] + "..."
        raise PolicyError(f"Unknown parameter {shown!r} in {where}.", f"{where}.{shown}")


def _require_list(obj: dict[str, object], key: str, where: str) -> list[object]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise PolicyError(f"{where}.{key} must be an array.", f"{where}.{key}")
    return value


def _pattern_at(entry: object, param: str) -> str:
    if not isinstance(entry, str):
        raise PolicyError(f"{param} must be a string.", param)
    try:
        return canonical_pattern(entry)
    except PolicyError as exc:
        raise PolicyError(str(exc), param) from None


def _covers(allowed: str, domain: str) -> bool:
    """An exact secret domain is covered by itself or a wildcard matching it; '*.x' only by
    '*.x' or a wider wildcard."""
    return allowed == domain or (
        allowed.startswith("*.") and matches(allowed, domain.removeprefix("*."))
    )


def _parse_secret(raw: object, where: str, allowed: tuple[str, ...]) -> DomainSecret:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be an object.", where)
    _check_keys(raw, ("name", "domain", "value"), where)
    name, value = raw.get("name"), raw.get("value")
    if not isinstance(name, str):
        raise PolicyError(f"{where}.name must be a string.", f"{where}.name")
    if not _ENV_NAME.fullmatch(name) or len(name) > _MAX_NAME_CHARS:
        raise PolicyError(
            f"{where}.name must match ^[A-Za-z_][A-Za-z0-9_]*$ (at most {_MAX_NAME_CHARS}"
            " characters).",
            f"{where}.name",
        )
    if is_reserved_env_name(name):
        raise PolicyError(f"{where}.name {name!r} is a reserved name.", f"{where}.name")
    domain = _pattern_at(raw.get("domain"), f"{where}.domain")
    if not any(_covers(a, domain) for a in allowed):
        raise PolicyError(
            f"{where}.domain {domain!r} is not covered by allowed_domains.", f"{where}.domain"
        )
    # The value is never echoed, not even a prefix of it.
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where}.value must be a non-empty string.", f"{where}.value")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise PolicyError(f"{where}.value must be valid UTF-8 text.", f"{where}.value") from None
    if size > MAX_SECRET_VALUE_BYTES:
        raise PolicyError(
            f"{where}.value is longer than {MAX_SECRET_VALUE_BYTES} bytes.", f"{where}.value"
        )
    if _FORBIDDEN_IN_VALUE.search(value):
        raise PolicyError(
            f"{where}.value must not contain CR, LF, NUL or other control characters.",
            f"{where}.value",
        )
    return DomainSecret(name=name, domain=domain, value=value)


def parse_network_policy(raw: object) -> NetworkPolicy | None:
    """Validate the create body's `network_policy` (None or {"type": "disabled"} -> None)."""
    where = "network_policy"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be an object.", where)
    kind = raw.get("type")
    if kind == "disabled":
        _check_keys(raw, ("type",), where)
        return None
    if kind != "allowlist":
        raise PolicyError(f"{where}.type must be 'disabled' or 'allowlist'.", f"{where}.type")
    _check_keys(raw, ("type", "allowed_domains", "domain_secrets"), where)

    entries = _require_list(raw, "allowed_domains", where)
    if not 1 <= len(entries) <= MAX_DOMAINS:
        raise PolicyError(
            f"{where}.allowed_domains must have 1 to {MAX_DOMAINS} entries.",
            f"{where}.allowed_domains",
        )
    patterns = [_pattern_at(e, f"{where}.allowed_domains[{i}]") for i, e in enumerate(entries)]
    allowed = tuple(dict.fromkeys(patterns))

    secrets: list[DomainSecret] = []
    if raw.get("domain_secrets") is not None:
        items = _require_list(raw, "domain_secrets", where)
        if len(items) > MAX_SECRETS:
            raise PolicyError(
                f"{where}.domain_secrets has more than {MAX_SECRETS} entries.",
                f"{where}.domain_secrets",
            )
        seen: set[str] = set()
        for i, item in enumerate(items):
            secret = _parse_secret(item, f"{where}.domain_secrets[{i}]", allowed)
            if secret.name in seen:
                raise PolicyError(
                    f"Duplicate secret name {secret.name!r}.",
                    f"{where}.domain_secrets[{i}].name",
                )
            seen.add(secret.name)
            secrets.append(secret)
    return NetworkPolicy(allowed_domains=allowed, secrets=tuple(secrets))


# ---- destination addresses ------------------------------------------------------------------


def _v4_is_global(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _V4_DENY)


def is_global_address(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for global unicast; anything unparsable or doubtful is False."""
    if isinstance(addr, str):
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(addr)
        except ValueError:
            return False
    else:
        ip = addr
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_is_global(ip)
    if ip.scope_id:
        return False
    if ip.ipv4_mapped is not None:
        return _v4_is_global(ip.ipv4_mapped)
    if ip in _V6_NAT64:
        return _v4_is_global(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    # Everything outside 2000::/3 (::, ::1, IPv4-compatible ::/96, 100::/64, fc00::/7,
    # fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48, ...) is not global unicast.
    return ip in _V6_GLOBAL_UNICAST and not any(ip in net for net in _V6_DENY)
