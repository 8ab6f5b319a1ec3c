//! Ports handed out to one test process: the kernel may give the same ephemeral port to two
//! consecutive `bind(0)` calls once the first socket is closed, and a server told to use one
//! port twice (HTTP and TURN, say) refuses its configuration. Every free-port helper claims its
//! ports here and looks again when any of them was handed out before.

use std::collections::BTreeSet;
use std::sync::Mutex;

static CLAIMED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Claims `first ..= first + count - 1` unless one of them was claimed before; whether it did.
pub fn claim(first: u16, count: u16) -> bool {
    let mut c = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let ports = (0..count).map(|k| first.saturating_add(k));
    if ports.clone().any(|p| c.contains(&p)) {
        return false;
    }
    c.extend(ports);
    true
}
