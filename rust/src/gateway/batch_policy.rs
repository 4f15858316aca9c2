//! The all-in-one's gateway threads run under `SCHED_BATCH`: the kernel then never lets one of them preempt
//! the thread that woke it. In one process with the event loop, the loop is what wakes them (each batch of
//! in-process answers, [`super::answer_mailbox`]), and a woken gateway thread used to take the core from the
//! loop right in that call, with the GIL held: every tenant's requests waited for it. Under `SCHED_BATCH` it
//! runs on an idle core at once (a quiet machine: no delay) or at the next scheduler tick; its share of the CPU
//! is unchanged (same nice level). Measured in benchmarks/RESULTS.md ("The loop's answers sent once per
//! iteration").
//!
//! Thread-safety: applies to the calling thread only.

/// Put the calling thread under `SCHED_BATCH`; false when the kernel refused (nothing changed then).
pub fn apply_to_current_thread() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 is the calling thread; `param` is a valid sched_param for a non-realtime policy.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_calling_thread_gets_the_batch_policy() {
        std::thread::spawn(|| {
            assert!(super::apply_to_current_thread());
            // SAFETY: the calling thread's policy, no pointers.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER, "other threads keep theirs");
    }
}
