"""The Realtime token of the worker: minted short-lived and renewed before it expires, or a key as given."""

from __future__ import annotations

import time

import jwt
import pytest

from meshhook_rt_metrics.alerting import tokens
from meshhook_rt_metrics.alerting.tokens import ServiceTokens

SECRET = "a-jwt-secret-of-the-project-at-least-32-bytes"


def test_minted_tokens_are_service_role_and_expire_within_the_hour() -> None:
    claims = jwt.decode(ServiceTokens(None, SECRET).token, SECRET, algorithms=["HS256"])
    assert claims["role"] == "service_role"
    assert 3500 < claims["exp"] - time.time() <= 3600


def test_a_minted_token_is_due_for_renewal_in_its_last_fifth(monkeypatch: pytest.MonkeyPatch) -> None:
    source = ServiceTokens(None, SECRET)
    first = source.token
    assert not source.due()
    now = time.time()
    monkeypatch.setattr(tokens.time, "time", lambda: now + 0.81 * tokens.MINTED_LIFETIME)
    assert source.due()
    assert source.renew() != first and not source.due()


def test_a_given_key_is_used_as_it_is_and_never_due() -> None:
    key = jwt.encode(
        {"role": "service_role", "exp": int(time.time()) + 10 * 365 * 86400}, SECRET, algorithm="HS256"
    )
    source = ServiceTokens(key, None)
    assert source.token == key and not source.due()


def test_without_a_key_or_secret_it_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="service key or the JWT secret"):
        ServiceTokens(None, None)
