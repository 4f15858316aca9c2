"""Random strings by pattern (record ids, ``:autogenerate``): the characters of the pattern's classes, uniformly,
and never the same draws in a worker process forked from the node as in the node itself (the random bytes are
drawn from the system in chunks and handed out one by one)."""

from __future__ import annotations

import collections
import os
import re

from pbfast.pocketbase.gocompat.regexp import generate_by_pattern

ID_PATTERN = "[a-z0-9]{15}"


def test_ids_match_their_pattern_and_use_every_character_alike() -> None:
    ids = [generate_by_pattern(ID_PATTERN) for _ in range(20_000)]
    assert all(re.fullmatch(ID_PATTERN, record_id) for record_id in ids)
    assert len(set(ids)) == len(ids)
    counts = collections.Counter("".join(ids))
    assert len(counts) == 36
    expected = 20_000 * 15 / 36
    assert all(abs(count - expected) < expected * 0.1 for count in counts.values()), counts
    assert re.fullmatch(r"users[0-9]{5}", generate_by_pattern(r"users[0-9]{5}"))
    assert re.fullmatch(r"[A-Z]{3}-é", generate_by_pattern(r"[A-Z]{3}-é"))


def test_a_forked_process_draws_other_ids_than_its_parent() -> None:
    generate_by_pattern(ID_PATTERN)  # random bytes are waiting in the buffer now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a worker forked from the node would draw first
        os.write(write_end, "".join(generate_by_pattern(ID_PATTERN) for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = os.read(read_end, 1000).decode()
    os.close(read_end)
    parent = "".join(generate_by_pattern(ID_PATTERN) for _ in range(3))
    assert len(child) == len(parent) == 45 and child != parent
