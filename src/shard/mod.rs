//! The per-core data-plane endpoint: demux, peer slab, timer table (sans-IO), driven by the
//! io_uring or epoll shells.
