"""Password checks answer exactly as the ``bcrypt`` package does (pyca/bcrypt, what pbfast used before its own
check): the native check (:func:`pbfast.primitives.bcrypt_check`) on hashes in the standard form, the package on
anything else; new hashes (:func:`pbfast.primitives.bcrypt_hash`) are the package's form and check there. Random
passwords and salts, cost 4 (the cheapest: the algorithm is the same at every cost)."""

from __future__ import annotations

import random

import bcrypt
import pytest

from pbfast.pocketbase.auth import hash_password, verify_password
from pbfast.primitives import bcrypt_check

ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _package(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a password over 72 bytes, a malformed hash: pbfast answers False
        return False


def _random_password(rng: random.Random) -> bytes:
    length = rng.choice([0, 1, 7, 8, 31, 71, 72, rng.randrange(73)])
    if rng.random() < 0.5:
        return bytes(rng.randrange(256) for _ in range(length))  # NULs and bytes that are not UTF-8 too
    return "".join(rng.choice("aZ9 é€😀\x00") for _ in range(length)).encode()[:72]


def test_matches_and_mismatches_agree_with_the_bcrypt_package() -> None:
    rng = random.Random(17)
    for case in range(60):
        password = _random_password(rng)
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(4, prefix=b"2a" if case % 3 == 0 else b"2b"))
        if case % 5 == 0:
            hashed = b"$2y$" + hashed[4:]  # PHP's prefix: same algorithm
        assert bcrypt_check(password, hashed) is True, (password, hashed)
        other = password[:-1] + bytes([password[-1] ^ 1]) if password else b"x"
        assert bcrypt_check(other, hashed) is _package(other, hashed) is False
        assert verify_password(password.decode("utf-8", "replace"), hashed.decode()) is \
            _package(password.decode("utf-8", "replace").encode(), hashed)


def test_hashes_out_of_the_standard_form_are_left_to_the_package() -> None:
    rng = random.Random(1717)
    password = b"reader-password-1"
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(4))
    assert bcrypt_check(password + b"p" * 60, hashed) is None  # 77 bytes: the package refuses it (ValueError)
    assert not verify_password("reader-password-1" + "p" * 60, hashed.decode())
    for _ in range(60):
        mangled = bytearray(hashed)
        index = rng.randrange(len(mangled))
        mangled[index] = ord(rng.choice(ALPHABET + "$x3"))
        answer = bcrypt_check(password, bytes(mangled))
        assert answer is None or answer is _package(password, bytes(mangled)), bytes(mangled)
        # the salt's last character carries 4 unused bits: only a canonical one is answered natively
        assert verify_password(password.decode(), bytes(mangled).decode()) is _package(password, bytes(mangled))
    for odd in (hashed[:-1], hashed + b"\n", b"$2x$" + hashed[4:], hashed.replace(b"$04$", b"$4$"), b""):
        assert bcrypt_check(password, odd) is None
        assert verify_password(password.decode(), odd.decode()) is _package(password, odd)


@pytest.mark.parametrize("cost", [4, 5])
def test_a_hash_made_at_another_cost_is_checked_at_its_own(cost: int) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(cost))
    assert bcrypt_check(b"secret", hashed) is True
    assert bcrypt_check(b"Secret", hashed) is False


def test_new_hashes_are_the_bcrypt_packages_form_and_check_there() -> None:
    rng = random.Random(71)
    for _ in range(20):
        password = "".join(rng.choice("aZ9 é€😀") for _ in range(rng.randrange(18)))
        hashed = hash_password(password, 4)
        assert hashed.startswith("$2b$04$") and len(hashed) == 60
        assert bcrypt.checkpw(password.encode(), hashed.encode())  # the package (and so PocketBase) reads it
        assert not bcrypt.checkpw((password + "x").encode(), hashed.encode())
    assert hash_password("same", 4) != hash_password("same", 4)  # a random salt each
    with pytest.raises(ValueError):  # the package's refusal, as before
        hash_password("p" * 73, 4)
    with pytest.raises(ValueError):
        hash_password("p", 3)
