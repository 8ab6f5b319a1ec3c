//! Proof that protect and unprotect never allocate: a counting global allocator,
//! armed only around the calls under test on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringsfu::srtp::{MasterKey, SrtpContext, SrtpProfile};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(|c| c.get())
}

fn rtp(seq: u16, ssrc: u32, buf: &mut [u8], payload: usize) -> usize {
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&u32::from(seq).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in buf[12..12 + payload].iter_mut().enumerate() {
        *b = i as u8;
    }
    12 + payload
}

#[test]
fn protect_and_unprotect_do_not_allocate() {
    // The counter itself works.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 8]))) > 0);
    for profile in SrtpProfile::ALL {
        let master =
            MasterKey::new(profile, &vec![1; profile.key_len()], &vec![2; profile.salt_len()])
                .expect("lengths");
        let mut tx = SrtpContext::new(&master).expect("tx");
        let mut rx = SrtpContext::new(&master).expect("rx");
        let mut buf = [0u8; 1500];
        let mut dst = [0u8; 1500];
        let mut src = [0u8; 1500];

        let count = allocations(|| {
            // New SSRCs, the sequence wrap, the fused path, SRTCP and failures included.
            for i in 0..1200u32 {
                let ssrc = 0x1000 + (i % 5);
                let seq = 65000u16.wrapping_add(i as u16);
                let len = rtp(seq, ssrc, &mut buf, 1200);
                let n = tx.protect_rtp(&mut buf, len, 12).expect("protect");
                assert_eq!(rx.unprotect_rtp(&mut buf[..n], 12), Ok(len));
                assert!(rx.unprotect_rtp(&mut buf[..n], 12).is_err(), "replay");

                let len = rtp(seq, ssrc + 100, &mut src, 1000);
                dst[..12].copy_from_slice(&src[..12]);
                let n =
                    tx.protect_rtp_payload_into(&mut dst, 12, &src[12..len]).expect("protect into");
                dst[n - 1] ^= 1;
                assert!(rx.unprotect_rtp(&mut dst[..n], 12).is_err(), "forged");
                let n = tx.protect_rtp_into(&src[..len], 12, &mut dst).expect("into");
                assert!(n > len);

                buf[..8].copy_from_slice(&[0x80, 200, 0, 6, 0, 0, 0, (i % 3) as u8]);
                let n = tx.protect_rtcp(&mut buf, 28).expect("protect rtcp");
                assert_eq!(rx.unprotect_rtcp(&mut buf[..n]), Ok(28));
                assert!(rx.unprotect_rtcp(&mut buf[..n]).is_err(), "replay");
            }
        });
        assert_eq!(count, 0, "{profile:?}: {count} allocations on the packet path");
        assert_eq!(rx.roc(0x1000), Some(1), "the run crossed the sequence wrap");
    }
}
