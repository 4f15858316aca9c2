"""Malformed tokens are refused as tokens, never an exception that would answer a 500: a token read from a
form keeps invalid UTF-8 as lone surrogates, which cannot cross into the native (Rust) token functions."""

from __future__ import annotations

import time

import pytest

from pbfast.pocketbase import auth


@pytest.mark.parametrize("token", ["\udcff.e30.sig", "eyJ9.\udcff.sig", "a.b.\udcff", "é.é.é", "a.b", ""])
def test_a_malformed_token_is_refused_without_an_exception(token: str) -> None:
    with pytest.raises(auth.TokenError):
        auth.peek_token_claims(token)
    assert auth.unverified_claims(token) == {}
    assert auth.verify_token_signature(token, "key", "secret") is False


def test_a_signed_token_reads_back_and_verifies_with_its_keys_only() -> None:
    token = auth.issue_auth_token("r1", "key", "c1", "secret", 60, now=time.time())
    assert auth.peek_token_claims(token)["id"] == "r1"
    assert auth.verify_token_signature(token, "key", "secret")
    assert not auth.verify_token_signature(token, "key", "secreT")
    assert not auth.verify_token_signature(token + "\udcff", "key", "secret")
