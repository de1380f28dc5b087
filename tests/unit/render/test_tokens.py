"""First-boot tokens: bound to one node, one exact build and a time window (pure, no clock)."""

import pytest

from helpers import TEST_KEY, TEST_NOW
from netbootd.render.tokens import BUCKET, FirstbootTokens, TokenRefused

MAC = "52:54:00:00:00:02"
TTL = 7200


@pytest.fixture
def tokens() -> FirstbootTokens:
    return FirstbootTokens(TEST_KEY, TTL)


def refusal(tokens: FirstbootTokens, token: str, mac: str = MAC, build: str = "demo/2.0",
            now: float = TEST_NOW) -> str:
    with pytest.raises(TokenRefused) as e:
        tokens.check(token, mac, build, now)
    sig = token.rsplit(".", 1)[-1]
    assert len(sig) < 3 or sig not in str(e.value)  # the message never echoes the token
    return e.value.reason


def test_a_token_opens_its_own_node_and_build_until_it_expires(tokens: FirstbootTokens) -> None:
    t = tokens.issue(MAC, "demo/2.0", TEST_NOW)
    tokens.check(t, MAC, "demo/2.0", TEST_NOW)
    tokens.check(t, MAC.upper(), "demo/2.0", TEST_NOW + TTL - BUCKET)
    assert refusal(tokens, t, mac="52:54:00:00:00:03") == "bad-signature"
    assert refusal(tokens, t, build="demo/1.0") == "bad-signature"
    assert refusal(tokens, t, now=TEST_NOW + TTL) == "expired"


def test_forged_or_altered_tokens_are_refused(tokens: FirstbootTokens) -> None:
    t = tokens.issue(MAC, "demo/2.0", TEST_NOW)
    issued, expires, sig = t.split(".")
    # Extending the expiry invalidates the signature.
    assert refusal(tokens, f"{issued}.{int(expires) + 86400}.{sig}") == "bad-signature"
    other_key = FirstbootTokens(bytes(32), TTL).issue(MAC, "demo/2.0", TEST_NOW)
    assert refusal(tokens, other_key) == "bad-signature"
    for junk in ["", "x", "..", "1.2", f"{issued}.{expires}.", "a.b.c", f"{issued}.{expires}",
                 f"\u00b2.{expires}.{sig}", f"{issued}.{expires}.{sig}\u00e9"]:
        assert refusal(tokens, junk) in ("malformed", "bad-signature"), junk
    future = tokens.issue(MAC, "demo/2.0", TEST_NOW + 3600)
    assert refusal(tokens, future) == "not-yet-valid"


def test_a_later_boot_gets_a_fresh_token(tokens: FirstbootTokens) -> None:
    a = tokens.issue(MAC, "demo/2.0", TEST_NOW)
    # Within one bucket the server and `netbootd render` agree on the token...
    start = TEST_NOW // BUCKET * BUCKET
    assert tokens.issue(MAC, "demo/2.0", start + BUCKET - 1) == \
        tokens.issue(MAC, "demo/2.0", start)
    # ...and the next boot, a bucket later, gets another one; both are valid until they expire.
    b = tokens.issue(MAC, "demo/2.0", TEST_NOW + BUCKET)
    assert a != b
    tokens.check(a, MAC, "demo/2.0", TEST_NOW + BUCKET)
    tokens.check(b, MAC, "demo/2.0", TEST_NOW + BUCKET)


def test_the_key_is_never_printed() -> None:
    t = FirstbootTokens(TEST_KEY, TTL)
    assert TEST_KEY.hex() not in repr(t) and repr(TEST_KEY) not in repr(t)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        FirstbootTokens(b"short", TTL)
