//! Where a byte string first occurs in another: what `bytes.find` answers, for the multipart reader's
//! search of a part's closing delimiter (`\r\n--boundary`) through an upload's bytes.
//!
//! CPython's `bytes.find` uses its two-way search for needles of this length: ~0.4-0.7 ns a byte, ~40-70 µs
//! through a 100 KB upload, with the GIL held. Here ([`find`]) candidates are the 16 positions at a time
//! whose first and last bytes match the needle's (SSE2 compares, on x86_64), each checked in full: a few µs
//! for the same 100 KB, and the GIL is released for long haystacks. Worst case (every position a candidate)
//! O(haystack × needle), as a naive search; the needles here are at most 74 bytes.

use pyo3::prelude::*;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// The first index at or after `start` where `needle` occurs in `haystack` (None when it does not, or
/// when `start` is past the end). An empty needle occurs at `start`.
pub fn find(haystack: &[u8], needle: &[u8], start: usize) -> Option<usize> {
    if start > haystack.len() {
        return None;
    }
    let found = match needle.len() {
        0 => Some(0),
        1 => haystack[start..].iter().position(|&b| b == needle[0]),
        _ => find_long(&haystack[start..], needle),
    };
    found.map(|at| at + start)
}

fn find_long(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    let last = haystack.len() - needle.len(); // the last position a match may start at
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of x86_64; `candidates` reads 16 bytes at `at` and at `at + needle.len() - 1`,
        // both within `haystack` while `at + 15 <= last`.
        while at + 15 <= last {
            let mut mask = unsafe { candidates(haystack, needle, at) };
            while mask != 0 {
                let offset = mask.trailing_zeros() as usize;
                if haystack[at + offset + 1..at + offset + needle.len() - 1] == needle[1..needle.len() - 1] {
                    return Some(at + offset);
                }
                mask &= mask - 1;
            }
            at += 16;
        }
    }
    while at <= last {
        if haystack[at] == needle[0] && haystack[at..at + needle.len()] == *needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// A bit for each of the 16 positions from `at` where the needle's first and last bytes both match.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn candidates(haystack: &[u8], needle: &[u8], at: usize) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let first = _mm_set1_epi8(needle[0] as i8);
    let last = _mm_set1_epi8(needle[needle.len() - 1] as i8);
    let starts = _mm_loadu_si128(haystack.as_ptr().add(at).cast::<__m128i>());
    let ends = _mm_loadu_si128(haystack.as_ptr().add(at + needle.len() - 1).cast::<__m128i>());
    let both = _mm_and_si128(_mm_cmpeq_epi8(starts, first), _mm_cmpeq_epi8(ends, last));
    _mm_movemask_epi8(both) as u32
}

// ---------------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------------

/// Haystacks from this long are searched without the GIL (below, releasing it costs more than the search).
const DETACH_FROM: usize = 64 * 1024;

/// ``haystack.find(needle, start)`` for bytes: the first index at or after ``start``, -1 when none.
#[pyfunction]
#[pyo3(name = "find_bytes")]
pub fn py_find_bytes(py: Python<'_>, haystack: &[u8], needle: &[u8], start: usize) -> isize {
    let found = if haystack.len() >= DETACH_FROM {
        py.detach(|| find(haystack, needle, start))
    } else {
        find(haystack, needle, start)
    };
    found.map_or(-1, |at| at as isize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(haystack: &[u8], needle: &[u8], start: usize) -> Option<usize> {
        if start > haystack.len() {
            return None;
        }
        (start..=haystack.len().checked_sub(needle.len())?).find(|&at| haystack[at..at + needle.len()] == *needle)
    }

    #[test]
    fn finds_what_a_naive_search_finds() {
        // A small alphabet makes partial matches (first and last bytes equal, middle not) frequent.
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for round in 0..3000 {
            let haystack: Vec<u8> = (0..(next() % 200)).map(|_| b"ab\r\n-"[(next() % 5) as usize]).collect();
            let needle: Vec<u8> = (0..(next() % 9)).map(|_| b"ab\r\n-"[(next() % 5) as usize]).collect();
            let start = (next() % 210) as usize;
            assert_eq!(find(&haystack, &needle, start), naive(&haystack, &needle, start), "round {round}");
        }
    }

    #[test]
    fn finds_a_delimiter_at_every_offset_of_a_block() {
        let needle = b"\r\n--benchboundary0123456789";
        for at in 0..40 {
            let mut haystack = vec![0x42u8; 100];
            haystack[at..at + needle.len()].copy_from_slice(needle);
            assert_eq!(find(&haystack, needle, 0), Some(at));
            assert_eq!(find(&haystack, needle, at + 1), None);
        }
    }

    #[test]
    fn edges() {
        assert_eq!(find(b"abc", b"", 1), Some(1));
        assert_eq!(find(b"abc", b"", 3), Some(3));
        assert_eq!(find(b"abc", b"", 4), None);
        assert_eq!(find(b"abc", b"c", 2), Some(2));
        assert_eq!(find(b"abc", b"abcd", 0), None);
        assert_eq!(find(b"", b"a", 0), None);
    }
}
