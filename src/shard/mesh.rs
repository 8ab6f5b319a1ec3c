//! The shard mesh: one bounded single-producer single-consumer ring for every ordered pair of
//! shards, so a core can hand packets and small requests to a core on another thread without a
//! lock, an allocation or a syscall per message.
//!
//! Each ring is an array of fixed-size [`MeshMsg`] slots with two indices (the writer's and the
//! reader's), each written by one side only; the only per-message atomics are those two
//! indices. A message is written in place into its slot (one copy of its bytes) and read in
//! place by the destination. A full ring refuses the message: the caller drops and counts it.
//!
//! Waking: a writer notes which destinations it wrote to and [`MeshPort::flush_wakes`] writes
//! each of those shards' command eventfd once (the shells call it once per loop turn, before
//! they sleep), so a sleeping destination wakes and drains its rings in its next turn.
//!
//! Why by hand and not `rtrb` (which the command queues use): the slots are 1.5 KiB and written
//! partly (a packet's length); `rtrb` hands out `&T` of whole slots, so every slot would have to
//! be fully initialised first, touching every page of every ring at start-up. Here the slot
//! array is allocated zeroed (the kernel maps zero pages lazily), so a ring costs memory only
//! once it carries traffic, and each message writes only its own bytes.

use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};
use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::eventfd::EventFd;

/// Largest payload of one message: a plaintext RTP packet as the router stores it.
pub const MESH_MTU: usize = 1500;

/// One message between two shards: a small header the cores interpret and up to [`MESH_MTU`]
/// bytes. Every field is plain data, valid when all-zero.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct MeshMsg {
    /// What the message is (the cores' own enumeration).
    pub kind: u8,
    /// A small index (a track within a producer).
    pub index: u8,
    len: u16,
    /// A key (the producer's peer id).
    pub key: u64,
    data: [u8; MESH_MTU],
}

impl MeshMsg {
    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len).min(MESH_MTU)]
    }
}

impl fmt::Debug for MeshMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshMsg")
            .field("kind", &self.kind)
            .field("index", &self.index)
            .field("key", &self.key)
            .field("len", &self.len)
            .finish()
    }
}

/// Keeps the two indices on separate cache lines (the writer's and the reader's core).
#[repr(align(64))]
struct Padded(AtomicUsize);

struct Ring {
    slots: Box<[UnsafeCell<MeshMsg>]>,
    mask: usize,
    /// Next slot the reader reads (written by the reader only).
    head: Padded,
    /// Next slot the writer writes (written by the writer only).
    tail: Padded,
}

// SAFETY: a slot is written only by the writer while it is outside [head, tail) and read only
// by the reader while inside it; the indices are published with Release and read with Acquire.
unsafe impl Sync for Ring {}
// SAFETY: as above; the slots are plain data.
unsafe impl Send for Ring {}

impl Ring {
    fn new(capacity: usize) -> Ring {
        let cap = capacity.max(2).next_power_of_two();
        let layout = Layout::array::<UnsafeCell<MeshMsg>>(cap).expect("mesh ring size");
        // SAFETY: the layout is non-zero; an all-zero MeshMsg is valid (plain integers and
        // bytes), and UnsafeCell<T> has T's layout. The Box takes ownership of exactly this
        // allocation with this layout.
        let slots = unsafe {
            let p = alloc_zeroed(layout).cast::<UnsafeCell<MeshMsg>>();
            if p.is_null() {
                handle_alloc_error(layout);
            }
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, cap))
        };
        Ring {
            slots,
            mask: cap - 1,
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
        }
    }
}

/// The writing end of one ring.
struct Writer {
    ring: Arc<Ring>,
    tail: usize,
    /// The reader's index as last read (refreshed only when the ring looks full).
    head: usize,
}

impl Writer {
    fn push(&mut self, kind: u8, index: u8, key: u64, bytes: &[u8]) -> bool {
        if bytes.len() > MESH_MTU {
            return false;
        }
        let cap = self.ring.mask + 1;
        if self.tail.wrapping_sub(self.head) >= cap {
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head) >= cap {
                return false;
            }
        }
        let slot = self.ring.slots[self.tail & self.ring.mask].get();
        // SAFETY: the slot is outside [head, tail), so the reader does not touch it until the
        // Release store below publishes it; we are the only writer.
        unsafe {
            (*slot).kind = kind;
            (*slot).index = index;
            (*slot).key = key;
            (*slot).len = bytes.len() as u16;
            (&mut (*slot).data)[..bytes.len()].copy_from_slice(bytes);
        }
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.0.store(self.tail, Ordering::Release);
        true
    }
}

/// The reading end of one ring.
struct Reader {
    ring: Arc<Ring>,
    head: usize,
}

impl Reader {
    fn available(&self) -> usize {
        self.ring.tail.0.load(Ordering::Acquire).wrapping_sub(self.head)
    }
}

/// A shard's wake-up: writes its command eventfd (the shells wait on it).
#[derive(Clone)]
pub struct ShardWake(pub(crate) Arc<EventFd>);

impl ShardWake {
    /// Wake the shard (one eventfd write).
    pub fn wake(&self) {
        self.0.notify();
    }
}

impl fmt::Debug for ShardWake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardWake")
    }
}

/// One shard's end of the mesh: a writer to and a reader from every other shard.
pub struct MeshPort {
    index: usize,
    writers: Vec<Option<Writer>>,
    readers: Vec<Option<Reader>>,
    wakes: Vec<ShardWake>,
    /// Destinations written to since the last [`MeshPort::flush_wakes`].
    written: Vec<bool>,
    /// Where the next drain starts (round robin over sources).
    next: usize,
}

impl fmt::Debug for MeshPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshPort")
            .field("index", &self.index)
            .field("shards", &self.shards())
            .finish()
    }
}

/// Builds the mesh of `shards` shards, `capacity` messages per ring (rounded up to a power of
/// two): port `i` goes to shard `i`. A single shard gets a port with no rings.
pub fn mesh(shards: usize, capacity: usize) -> Vec<MeshPort> {
    let n = shards.max(1);
    let mut ports: Vec<MeshPort> = (0..n)
        .map(|index| MeshPort {
            index,
            writers: (0..n).map(|_| None).collect(),
            readers: (0..n).map(|_| None).collect(),
            wakes: Vec::new(),
            written: vec![false; n],
            next: 0,
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from == to {
                continue;
            }
            let ring = Arc::new(Ring::new(capacity));
            ports[from].writers[to] = Some(Writer { ring: ring.clone(), tail: 0, head: 0 });
            ports[to].readers[from] = Some(Reader { ring, head: 0 });
        }
    }
    ports
}

impl MeshPort {
    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Shards in the mesh.
    pub fn shards(&self) -> usize {
        self.writers.len()
    }

    /// The wake-ups of every shard, by index (from `crate::io`'s `ShardInfo::wakes`).
    pub fn set_wakes(&mut self, wakes: Vec<ShardWake>) {
        self.wakes = wakes;
    }

    /// Writes one message to shard `to`; false when its ring is full (or `to` is this shard or
    /// out of range, or `bytes` exceeds [`MESH_MTU`]): the caller drops and counts it.
    pub fn push(&mut self, to: usize, kind: u8, index: u8, key: u64, bytes: &[u8]) -> bool {
        let Some(Some(w)) = self.writers.get_mut(to) else { return false };
        let ok = w.push(kind, index, key, bytes);
        if ok {
            self.written[to] = true;
        }
        ok
    }

    /// Wakes every shard written to since the last call (one eventfd write each).
    pub fn flush_wakes(&mut self) {
        for (to, w) in self.written.iter_mut().enumerate() {
            if std::mem::take(w)
                && let Some(wake) = self.wakes.get(to)
            {
                wake.wake();
            }
        }
    }

    /// Whether a message waits in any ring to this shard.
    pub fn has_input(&self) -> bool {
        self.readers.iter().flatten().any(|r| r.available() > 0)
    }

    /// Hands up to `max` waiting messages to `f` (source shard, message), read in place, the
    /// sources taken in turn. Returns how many were handled.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(usize, &MeshMsg)) -> usize {
        let n = self.readers.len();
        let mut done = 0;
        for k in 0..n {
            let from = (self.next + k) % n;
            let Some(r) = self.readers[from].as_mut() else { continue };
            let avail = r.available();
            let take = avail.min(max - done);
            for _ in 0..take {
                let slot = r.ring.slots[r.head & r.ring.mask].get();
                // SAFETY: the slot is inside [head, tail) (published by the writer's Release
                // store, seen through `available`'s Acquire load), so the writer does not touch
                // it until the Release store of `head` after the loop; all-zero or written, it is valid.
                f(from, unsafe { &*slot });
                r.head = r.head.wrapping_add(1);
            }
            if take > 0 {
                r.ring.head.0.store(r.head, Ordering::Release);
            }
            done += take;
            if done == max {
                break;
            }
        }
        self.next = (self.next + 1) % n;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_order_and_a_full_ring_refuses() {
        let mut ports = mesh(2, 4);
        let mut b = ports.pop().unwrap();
        let mut a = ports.pop().unwrap();
        for i in 0..4u8 {
            assert!(a.push(1, 7, i, u64::from(i) * 10, &[i; 3]));
        }
        assert!(!a.push(1, 7, 9, 0, b"x"), "a ring of 4 holds 4");
        assert!(!a.push(0, 7, 9, 0, b"x"), "no ring to itself");
        assert!(!a.push(1, 7, 9, 0, &[0; MESH_MTU + 1]), "too large");
        assert!(b.has_input() && !a.has_input());
        let mut got = Vec::new();
        assert_eq!(b.drain(3, |from, m| got.push((from, m.index, m.key, m.bytes().to_vec()))), 3);
        assert_eq!(got[0], (0, 0, 0, vec![0; 3]));
        assert_eq!(got[2], (0, 2, 20, vec![2; 3]));
        assert!(a.push(1, 7, 4, 40, b"four"), "room again after the reader moved on");
        got.clear();
        assert_eq!(b.drain(10, |_, m| got.push((0, m.index, m.key, m.bytes().to_vec()))), 2);
        assert_eq!(got[1].3, b"four");
        assert!(!b.has_input());
    }

    #[test]
    fn a_writer_thread_and_a_reader_thread_agree_on_every_byte() {
        let mut ports = mesh(2, 64);
        let mut b = ports.pop().unwrap();
        let mut a = ports.pop().unwrap();
        const N: u64 = 200_000;
        let writer = std::thread::spawn(move || {
            let mut i = 0u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while i < N && std::time::Instant::now() < deadline {
                let len = (i % 97) as usize + 8;
                let mut buf = [0u8; 128];
                buf[..8].copy_from_slice(&i.to_le_bytes());
                if a.push(1, 1, (i % 251) as u8, i, &buf[..len]) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            i
        });
        let mut next = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while next < N && std::time::Instant::now() < deadline {
            b.drain(32, |_, m| {
                assert_eq!(m.key, next);
                assert_eq!(m.index, (next % 251) as u8);
                assert_eq!(m.bytes().len(), (next % 97) as usize + 8);
                assert_eq!(&m.bytes()[..8], &next.to_le_bytes());
                next += 1;
            });
        }
        assert_eq!(writer.join().unwrap(), N);
        assert_eq!(next, N);
    }
}
