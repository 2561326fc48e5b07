"""sandbox.policy: validation at create, canonical hosts, matching, destination addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from sandbox.policy import (
    MAX_DOMAINS,
    MAX_SECRET_VALUE_BYTES,
    MAX_SECRETS,
    RESERVED_ENV_NAMES,
    DomainSecret,
    NetworkPolicy,
    PolicyError,
    canonical_host,
    canonical_pattern,
    is_global_address,
    is_ip_literal,
    is_reserved_env_name,
    matches,
    parse_network_policy,
)

SECRET = "sk-live-0123456789abcdefSECRET"
HOMOGLYPH_API = "\u0430pi.allowed.test"  # CYRILLIC SMALL LETTER A
FULLWIDTH_EXAMPLE = "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45"
FULLWIDTH_LOOPBACK = "\uff11\uff12\uff17.\uff10.\uff10.\uff11"  # full-width 127.0.0.1


def allowlist(domains: list[Any], secrets: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "allowlist", "allowed_domains": domains, **extra}
    if secrets is not None:
        body["domain_secrets"] = secrets
    return body


def secret(name: Any = "API_KEY", domain: Any = "api.allowed.test", value: Any = SECRET) -> Any:
    return {"name": name, "domain": domain, "value": value}


def policy_error(raw: object) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_network_policy(raw)
    return info.value


# ---- canonical_pattern (policy side) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("example.com", "example.com"),
        ("API.Allowed.TEST.", "api.allowed.test"),
        ("*.Wild.Test", "*.wild.test"),
        ("*.wild.test.", "*.wild.test"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),  # A-labels are not converted again
        (FULLWIDTH_EXAMPLE + "\uff0ecom", "example.com"),  # UTS-46 maps full-width forms
        (HOMOGLYPH_API, "xn--pi-6kc.allowed.test"),  # a different name
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("a-b.example.com", "a-b.example.com"),
        ("123.example.com", "123.example.com"),
        ("example.co.uk", "example.co.uk"),
        ("*.example.co.uk", "*.example.co.uk"),
        ("user.github.io", "user.github.io"),
        ("github.io", "github.io"),  # private PSL section is not consulted
        ("*.github.io", "*.github.io"),
        ("a." * 125 + "com", "a." * 125 + "com"),  # 253 characters
    ],
)
def test_canonical_pattern_accepts(entry: str, expected: str) -> None:
    assert canonical_pattern(entry) == expected


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "empty label"),
        (".", "empty label"),
        ("*", "'*'"),
        ("*.", "empty label"),
        ("*example.com", "'*'"),
        ("**.example.com", "'*'"),
        ("*.*.example.com", "'*'"),
        ("a.*.example.com", "'*'"),
        ("api.*", "'*'"),
        ("ex*ample.com", "'*'"),
        ("a..example.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("example.com:443", "ports"),
        ("*.example.com:443", "ports"),
        ("https://example.com", "URL"),
        ("example.com/path", "paths"),
        ("127.0.0.1", "IP addresses"),
        ("169.254.169.254", "IP addresses"),
        ("2130706433", "IP addresses"),
        ("0x7f.1", "IP addresses"),
        ("[::1]", "IP addresses"),
        ("::1", "IP addresses"),
        ("::ffff:127.0.0.1", "IP addresses"),
        (FULLWIDTH_LOOPBACK, "IP addresses"),  # full-width digits map to an IP literal
        ("*.127.0.0.1", "IP addresses"),
        ("com", "public suffix"),
        ("co.uk", "public suffix"),
        ("*.com", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("*.kobe.jp", "public suffix"),
        ("COM.", "public suffix"),
        ("*.test", "public suffix"),  # an unknown TLD counts as public
        ("localhost", "public suffix"),
        ("-bad.example.com", "labels"),
        ("bad-.example.com", "labels"),
        ("a b.example.com", "labels"),
        (" example.com", "labels"),
        ("exa\nmple.com", "labels"),
        ("a" * 64 + ".example.com", "labels"),
        ("a." * 126 + "com", "labels"),  # 255 characters
        ("example.123", "labels"),
        ("x" * 2000, "too long"),
        ("bad\u200dname.example", "internationalised"),
        ("bü_cher.example", "internationalised"),
    ],
)
def test_canonical_pattern_rejects(entry: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        canonical_pattern(entry)
    assert reason in str(info.value)
    assert info.value.param == ""


# ---- parse_network_policy ---------------------------------------------------------------------


def test_absent_and_disabled_policies_are_none() -> None:
    assert parse_network_policy(None) is None
    assert parse_network_policy({"type": "disabled"}) is None


def test_allowlist_is_canonical_deduplicated_and_ordered() -> None:
    policy = parse_network_policy(
        allowlist(
            ["B.example.com", "*.wild.test", "b.example.com.", "a.example.com", "*.WILD.test"]
        )
    )
    assert policy == NetworkPolicy(
        allowed_domains=("b.example.com", "*.wild.test", "a.example.com")
    )


def test_allowlist_with_secrets() -> None:
    policy = parse_network_policy(
        allowlist(
            ["api.allowed.test", "*.wild.test"],
            [
                secret(),
                secret("OTHER", "*.wild.test", "v2"),
                secret("deep", "A.B.Wild.Test", "v3"),
                secret("NARROW", "*.x.wild.test", "v4"),
            ],
        )
    )
    assert policy is not None
    assert [(s.name, s.domain) for s in policy.secrets] == [
        ("API_KEY", "api.allowed.test"),
        ("OTHER", "*.wild.test"),
        ("deep", "a.b.wild.test"),
        ("NARROW", "*.x.wild.test"),
    ]
    assert policy.secrets[0].value == SECRET


def test_domain_secrets_may_be_empty_or_null() -> None:
    expected = NetworkPolicy(allowed_domains=("example.com",))
    assert parse_network_policy(allowlist(["example.com"], [])) == expected
    assert parse_network_policy(allowlist(["example.com"], domain_secrets=None)) == expected


def test_limits_are_accepted_at_the_boundary() -> None:
    domains = [f"h{i}.example.com" for i in range(MAX_DOMAINS)]
    secrets = [secret(f"K{i}", "h0.example.com", "v" * MAX_SECRET_VALUE_BYTES) for i in range(64)]
    policy = parse_network_policy(allowlist(domains, secrets))
    assert policy is not None
    assert len(policy.allowed_domains) == MAX_DOMAINS
    assert len(policy.secrets) == MAX_SECRETS


NP = "network_policy"
AD = "network_policy.allowed_domains"
DS = "network_policy.domain_secrets"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ("allowlist", NP),
        (["example.com"], NP),
        ({}, f"{NP}.type"),
        ({"type": "deny"}, f"{NP}.type"),
        ({"type": None}, f"{NP}.type"),
        ({"type": "disabled", "allowed_domains": ["example.com"]}, f"{NP}.allowed_domains"),
        (allowlist(["example.com"], extra=1), f"{NP}.extra"),
        ({"type": "allowlist"}, AD),
        (allowlist("example.com"), AD),  # type: ignore[arg-type]
        (allowlist([]), AD),
        (allowlist([f"h{i}.example.com" for i in range(MAX_DOMAINS + 1)]), AD),
        (allowlist(["example.com", 7]), f"{AD}[1]"),
        (allowlist(["example.com", None]), f"{AD}[1]"),
        (allowlist(["example.com", "ok.test", "*.com"]), f"{AD}[2]"),
        (allowlist(["127.0.0.1"]), f"{AD}[0]"),
        (allowlist(["*"]), f"{AD}[0]"),
        (allowlist(["example.com"], {"name": "X"}), DS),
        (allowlist(["a.test"], [secret("K", "a.test"), secret("L", "a.test"), 7]), f"{DS}[2]"),
        (allowlist(["example.com"], [secret("K", "example.com")] * (MAX_SECRETS + 1)), DS),
        (allowlist(["a.test"], [{**secret(domain="a.test"), "extra": 1}]), f"{DS}[0].extra"),
        (allowlist(["a.test"], [{"domain": "a.test", "value": "v"}]), f"{DS}[0].name"),
        (allowlist(["a.test"], [{"name": "K", "value": "v"}]), f"{DS}[0].domain"),
        (allowlist(["a.test"], [{"name": "K", "domain": "a.test"}]), f"{DS}[0].value"),
    ],
)
def test_structure_errors_name_the_param(raw: object, param: str) -> None:
    assert policy_error(raw).param == param


@pytest.mark.parametrize(
    "name",
    ["", "1KEY", "KEY-1", "KEY 1", "KEY=1", "KÉY", "KEY\n", "k" * 129, 7, None],
)
def test_bad_secret_names(name: object) -> None:
    error = policy_error(allowlist(["api.allowed.test"], [secret(name=name)]))
    assert error.param == f"{DS}[0].name"


@pytest.mark.parametrize(
    "name",
    [
        "PATH", "path", "HOME", "USER", "SHELL", "PWD", "LANG", "LC_ALL", "lc_ctype", "TERM",
        "TMPDIR", "PYTHONPATH", "PYTHONHOME", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "PIP_CERT", "MPLBACKEND", "HTTP_PROXY",
        "https_proxy", "ALL_PROXY", "no_proxy", "MY_CUSTOM_PROXY", "SANDBOXD_TOKEN", "_",
    ],
)  # fmt: skip
def test_reserved_secret_names(name: str) -> None:
    assert is_reserved_env_name(name)
    error = policy_error(allowlist(["api.allowed.test"], [secret(name=name)]))
    assert error.param == f"{DS}[0].name"
    assert "reserved" in str(error)


@pytest.mark.parametrize("name", ["API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "_x1", "PROXYISH"])
def test_ordinary_names_are_not_reserved(name: str) -> None:
    assert not is_reserved_env_name(name)


def test_reserved_set_is_upper_case() -> None:
    assert all(n == n.upper() for n in RESERVED_ENV_NAMES)


def test_duplicate_secret_names_are_refused() -> None:
    raw = allowlist(["a.test", "b.test"], [secret("K", "a.test"), secret("K", "b.test")])
    error = policy_error(raw)
    assert error.param == f"{DS}[1].name"
    assert "Duplicate" in str(error)


@pytest.mark.parametrize(
    ("allowed", "domain"),
    [
        (["api.allowed.test"], "other.allowed.test"),
        (["api.allowed.test"], "*.api.allowed.test"),
        (["*.wild.test"], "wild.test"),  # the apex is not covered by the wildcard
        (["wild.test"], "*.wild.test"),  # an exact entry never covers a wildcard secret
        (["*.x.wild.test"], "*.wild.test"),  # a narrower wildcard does not cover a wider one
        (["*.wild.test"], "evilwild.test"),
        (["api.allowed.test"], "API.allowed.test.evil.test"),
    ],
)
def test_secret_domain_must_be_covered(allowed: list[str], domain: str) -> None:
    error = policy_error(allowlist(allowed, [secret(domain=domain)]))
    assert error.param == f"{DS}[0].domain"
    assert "not covered" in str(error)


@pytest.mark.parametrize("domain", ["*.com", "127.0.0.1", "*", "a..test", "x.test:443", 5, None])
def test_secret_domain_canonicalises_like_an_entry(domain: object) -> None:
    error = policy_error(allowlist(["x.test"], [secret(domain=domain)]))
    assert error.param == f"{DS}[0].domain"


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"{SECRET}\r\nX-Injected: 1",
        f"{SECRET}\n",
        f"\r{SECRET}",
        f"{SECRET}\x00",
        f"{SECRET}\x0b",
        f"{SECRET}\x7f",
        SECRET + "x" * MAX_SECRET_VALUE_BYTES,
        "é" * (MAX_SECRET_VALUE_BYTES // 2 + 1),  # counted in UTF-8 bytes
        SECRET + "\ud800",  # lone surrogate: not UTF-8
        12345,
        None,
        [SECRET],
    ],
)
def test_bad_secret_values_never_echo_the_value(value: object) -> None:
    error = policy_error(allowlist(["api.allowed.test"], [secret(value=value)]))
    assert error.param == f"{DS}[0].value"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert "12345" not in str(error)


def test_value_with_tab_space_and_unicode_is_accepted() -> None:
    value = "Bearer\ttoken with spaces ü"
    policy = parse_network_policy(allowlist(["api.allowed.test"], [secret(value=value)]))
    assert policy is not None
    assert policy.secrets[0].value == value


def test_errors_after_a_secret_do_not_echo_it() -> None:
    raw = allowlist(["api.allowed.test"], [secret(), secret("K2", "nope.test")])
    error = policy_error(raw)
    assert error.param == f"{DS}[1].domain"
    assert SECRET not in str(error)


# ---- repr and public view never leak --------------------------------------------------------


def test_secret_repr_hides_the_value() -> None:
    policy = parse_network_policy(allowlist(["api.allowed.test"], [secret()]))
    assert policy is not None
    assert SECRET not in repr(policy.secrets[0])
    assert SECRET not in str(policy.secrets[0])
    assert SECRET not in repr(policy)
    assert "API_KEY" in repr(policy.secrets[0])


def test_public_view_has_no_secrets() -> None:
    policy = parse_network_policy(allowlist(["api.allowed.test", "*.wild.test"], [secret()]))
    assert policy is not None
    assert policy.public() == {
        "type": "allowlist",
        "allowed_domains": ["api.allowed.test", "*.wild.test"],
    }
    assert SECRET not in repr(policy.public())
    assert "API_KEY" not in repr(policy.public())


# ---- canonical_host (request side) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.allowed.test", "api.allowed.test"),
        ("API.Allowed.TEST.", "api.allowed.test"),  # case 5
        ("api.allowed.test.", "api.allowed.test"),
        ("API.ALLOWED.TEST", "api.allowed.test"),
        ("_srv.example.com", "_srv.example.com"),
        ("localhost", "localhost"),
        ("0x7f.example.com", "0x7f.example.com"),  # numeric-looking labels before a real TLD
        ("1.2.3.example", "1.2.3.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a" * 63 + ".test", "a" * 63 + ".test"),
        ("a." * 125 + "com", "a." * 125 + "com"),
        ("a." * 125 + "com.", "a." * 125 + "com"),  # 253 once the dot is stripped
    ],
)
def test_canonical_host_accepts(host: str, expected: str) -> None:
    assert canonical_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "api.allowed.test..",  # only one trailing dot is stripped
        ".api.allowed.test",
        "api..allowed.test",
        HOMOGLYPH_API,  # case 20
        "bücher.example",  # no IDNA conversion on the request side
        "xn--bcher-kva.example\u200b",
        FULLWIDTH_EXAMPLE + ".com",
        "\u212aelvin.example",  # KELVIN SIGN lowercases to ASCII 'k'
        "-api.allowed.test",
        "api-.allowed.test",
        "api allowed.test",
        "api.allowed.test\n",
        "api.allowed.test:443",
        "api.allowed.test/",
        "user@api.allowed.test",
        "*.wild.test",
        "a" * 64 + ".test",
        "a." * 126 + "com",
        "example.123",
        # IP literals (case 6 and friends)
        "127.0.0.1",
        "127.0.0.1.",
        "[::1]",
        "::1",
        "169.254.169.254",
        "2130706433",
        "0x7f.1",
        "0X7F.1",
        "0x7f",
        "0177.1",
        "0177.0.0.1",
        "127.1",
        "1.0x7f",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "[fe80::1%25eth0]",
        "fe80::1%eth0",
    ],
)
def test_canonical_host_rejects(host: str) -> None:
    assert canonical_host(host) is None


# ---- is_ip_literal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "127.0.0.1.", "127.1", "127.0.1", "2130706433", "2130706433.", "0x7f.1",
        "0x7F000001", "0x7f.0x0.0x0.0x1", "0177.1", "0177.0.0.1", "017700000001", "0", "0x",
        "169.254.169.254", "999.1.1.1", "127.0.0.1 trailing", "[::1]", "::1", "[::]",
        "::ffff:127.0.0.1", "[::ffff:7f00:1]", "::FFFF:127.0.0.1", "fe80::1%eth0",
        "[fe80::1%25eth0]", "[fe80::1%eth0]", "64:ff9b::7f00:1", "2001:db8::1.",
    ],
)  # fmt: skip
def test_ip_literal_spellings(host: str) -> None:
    assert is_ip_literal(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.com", "0x7f.example.com", "1.2.3.example", "1.2.3.4.5", "127..1", "",
        "localhost", "[example.com]", "0xg.1", "1e3", "deadbeef", "a:b",
    ],
)  # fmt: skip
def test_not_ip_literals(host: str) -> None:
    assert not is_ip_literal(host)


# ---- matches and NetworkPolicy.allows (cases 5, 19) ------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("example.com", "evilexample.com", False),
        ("example.com", "example.com.evil.test", False),
        ("*.wild.test", "wild.test", False),
        ("*.wild.test", "evilwild.test", False),
        ("*.wild.test", "x.wild.test.evil.test", False),
        ("*.wild.test", "a.wild.test", True),
        ("*.wild.test", "a.b.wild.test", True),
        ("*.wild.test", "_x.wild.test", True),
        ("*.wild.test", "wild.test.", False),  # hosts are canonical; a raw dot never slips in
        ("*.wild.test", ".wild.test", False),
    ],
)
def test_matches(pattern: str, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


@pytest.mark.parametrize(
    ("raw_host", "allowed"),
    [
        ("API.Allowed.TEST.", True),
        ("api.allowed.test", True),
        ("api.allowed.test..", False),
        (HOMOGLYPH_API, False),
        ("wild.test", False),
        ("evilwild.test", False),
        ("x.wild.test.evil.test", False),
        ("a.b.wild.test", True),
        ("A.B.WILD.TEST.", True),
        ("xn--bcher-kva.example", True),
        ("bücher.example", False),
        ("evil.test", False),
        ("127.0.0.1", False),
    ],
)
def test_policy_allows_canonical_hosts(raw_host: str, allowed: bool) -> None:
    policy = parse_network_policy(allowlist(["api.allowed.test", "*.wild.test", "bücher.example"]))
    assert policy is not None
    host = canonical_host(raw_host)
    assert (host is not None and policy.allows(host)) is allowed


def test_secrets_for_matches_each_secret_domain() -> None:
    policy = parse_network_policy(
        allowlist(
            ["api.allowed.test", "*.wild.test"],
            [secret("A"), secret("W", "*.wild.test"), secret("D", "deep.x.wild.test")],
        )
    )
    assert policy is not None
    assert [s.name for s in policy.secrets_for("api.allowed.test")] == ["A"]
    assert [s.name for s in policy.secrets_for("x.wild.test")] == ["W"]
    assert [s.name for s in policy.secrets_for("deep.x.wild.test")] == ["W", "D"]
    assert policy.secrets_for("wild.test") == ()
    assert policy.secrets_for("other.test") == ()


def test_domain_secret_is_frozen() -> None:
    s = DomainSecret(name="K", domain="a.test", value=SECRET)
    with pytest.raises(AttributeError):
        s.value = "x"  # type: ignore[misc]


# ---- is_global_address (case 7) -------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    [
        "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.0",
        "172.15.255.255", "172.32.0.0", "192.169.0.1", "223.255.255.254",
        "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450::1",
        "::ffff:8.8.8.8",  # IPv4-mapped form of a global address
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        ipaddress.ip_address("8.8.4.4"), ipaddress.ip_address("2606:4700::1"),
    ],
)  # fmt: skip
def test_global_addresses(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert is_global_address(addr)


# Teredo: prefix 2001:0000, server 192.0.2.45 (c000:022d), flags, port, client obfuscated.
TEREDO_PRIVATE_CLIENT = "2001:0:c000:22d:0:0:f5ff:fffe"  # client ~0xf5fffffe = 10.0.0.1
TEREDO_GLOBAL_BOTH = "2001:0:808:808:0:0:f7f7:f7f7"  # server 8.8.8.8, client 8.8.8.8


@pytest.mark.parametrize(
    "addr",
    [
        # IPv4 special ranges
        "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
        "127.0.0.1", "127.0.0.2", "169.254.169.254", "169.254.0.1", "172.16.0.1",
        "172.31.255.255", "192.0.0.1", "192.0.0.9", "192.0.0.10", "192.0.2.1", "192.88.99.1",
        "192.168.1.1", "198.18.0.1", "198.19.255.255", "198.51.100.1", "203.0.113.1",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        # IPv6 special ranges
        "::", "::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "fc00::1", "fd12:3456::1",
        "ff02::1", "ff0e::1", "100::1", "100::ffff:ffff:ffff:ffff", "2001:db8::1",
        "2001:2::1", "2001:10::1", "2001:20::1", "3fff::1", "4000::1", "::8.8.8.8",
        # IPv6 forms wrapping IPv4
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
        "::ffff:0.0.0.0", "::127.0.0.1", "::10.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::c0a8:101",
        "64:ff9b:1::a00:1", "64:ff9b:1::808:808", "64:ff9b:2::808:808",
        "2002:7f00:1::", "2002:a00:1::1", "2002:808:808::1",
        TEREDO_PRIVATE_CLIENT, TEREDO_GLOBAL_BOTH,
        # not addresses at all
        "", "localhost", "[::1]", "127.1", "2130706433", "0x7f.1", "8.8.8.8/32",
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("::ffff:192.168.0.1"),
    ],
)  # fmt: skip
def test_non_global_addresses(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert not is_global_address(addr)


def test_teredo_fixture_wraps_what_it_says() -> None:
    teredo = ipaddress.IPv6Address(TEREDO_PRIVATE_CLIENT).teredo
    assert teredo is not None
    assert teredo == (ipaddress.IPv4Address("192.0.2.45"), ipaddress.IPv4Address("10.0.0.1"))
