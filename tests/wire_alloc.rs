//! Proves that the wire parse paths (and the in-place writers) never allocate: a counting
//! global allocator wraps the system one, and each path runs over the committed seed packets
//! with a per-thread counter checked before and after.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringsfu::wire::rtcp::{self, RtcpCompound, RtcpPacket};
use ringsfu::wire::stun::{Class, Method, StunView, StunWriter};
use ringsfu::wire::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards unchanged to `System`; the counter is a thread-local Cell with
// a const initializer, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn no_alloc(name: &str, f: impl FnOnce()) {
    let before = allocs();
    f();
    let after = allocs();
    assert_eq!(after, before, "{name} allocated {} times", after - before);
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

#[test]
fn parse_paths_do_not_allocate() {
    let key = IntegrityKey::short_term(b"VOkJxbRl1RmTxUk/WvJxBt");
    let lt = IntegrityKey::long_term(b"user", b"realm", b"pass");
    let stun_seeds = seeds("stun");
    let rtp_seeds = seeds("rtp");
    let rtcp_seeds = seeds("rtcp");
    let dtls_seeds = seeds("dtls_record");
    let cd_seeds = seeds("channel_data");
    let mapped: std::net::SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let mut out = [0u8; 1500];
    let mut rtp_copy = [0u8; 1500];

    // Control: the counter does see an allocation on this thread.
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocs() > before, "counting allocator is not active");
    drop(v);

    no_alloc("stun", || {
        for d in &stun_seeds {
            let _ = demux(d);
            let Ok(v) = StunView::parse(d) else { continue };
            let _ = v.username();
            let _ = v.priority();
            let _ = v.use_candidate();
            let _ = v.ice_controlling();
            let _ = v.ice_controlled();
            let _ = v.xor_mapped_address();
            let _ = v.error_code();
            let _ = v.software();
            let _ = v.requested_transport();
            let _ = v.lifetime();
            let _ = v.realm();
            let _ = v.nonce();
            let _ = v.xor_peer_addresses().count();
            let _ = v.verify_integrity(&key);
            let _ = v.verify_integrity(&lt);
            let _ = v.verify_integrity_sha256(&key);
            let _ = v.verify_fingerprint();
            let _ = stream_frame_len(d);
        }
    });
    no_alloc("stun writer", || {
        let mut w =
            StunWriter::new(&mut out, Class::SuccessResponse, Method::BINDING, &[3; 12]).unwrap();
        w.xor_mapped_address(mapped).unwrap();
        w.error_code(487, "Role Conflict").unwrap();
        w.message_integrity(&key).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        assert!(n > 20);
    });
    no_alloc("channel data", || {
        for d in &cd_seeds {
            let v = ChannelDataView::parse(d).unwrap();
            let _ = channel_data::write(&mut out, v.channel(), v.data(), true);
        }
    });
    no_alloc("rtp", || {
        for d in &rtp_seeds {
            let v = RtpView::parse(d).unwrap();
            let _ = v.extensions().count();
            let _ = v.csrcs().count();
            let _ = v.payload();
            let _ = v.transport_cc(3);
            rtp_copy[..d.len()].copy_from_slice(d);
            let mut w = RtpRewriter::new(&mut rtp_copy[..d.len()]).unwrap();
            w.set_ssrc(1).set_sequence_number(2).set_timestamp(3).set_marker(true);
            let _ = w.set_payload_type(100);
            let _ = w.set_transport_cc(3, 7);
            let _ = w.set_abs_send_time(2, 7);
        }
    });
    no_alloc("rtcp", || {
        for d in &rtcp_seeds {
            let c = RtcpCompound::parse_relaxed(d).unwrap();
            for p in c.packets().flatten() {
                match p {
                    RtcpPacket::SenderReport(s) => {
                        let _ = s.report_blocks().count();
                    }
                    RtcpPacket::ReceiverReport(r) => {
                        let _ = r.report_blocks().count();
                    }
                    RtcpPacket::Sdes(s) => {
                        for ch in s.chunks() {
                            let _ = ch.items().count();
                        }
                    }
                    RtcpPacket::Nack(n) => {
                        let _ = n.lost().count();
                    }
                    RtcpPacket::TransportCc(t) => {
                        let _ = t.packets().count();
                    }
                    RtcpPacket::Remb(r) => {
                        let _ = r.bitrate();
                    }
                    _ => {}
                }
            }
        }
        let _ = rtcp::nack::write_lost(&mut out, 1, 2, [5u16, 6, 9, 40]);
        let _ = rtcp::twcc::write(
            &mut out,
            &rtcp::twcc::TwccHeader::default(),
            &[Some(1), None, Some(-3), Some(300)],
        );
        let _ = rtcp::remb::write(&mut out, 1, 1_500_000, &[7]);
        let _ = rtcp::pli::write(&mut out, 1, 2);
    });
    no_alloc("dtls", || {
        for d in &dtls_seeds {
            let _ = records(d).count();
        }
    });
}

/// The codec descriptors, the AV1 Dependency Descriptor and the per-consumer layer path
/// (selector, rewriter, NACK mapping, `Rewrite::apply`) per packet.
#[test]
fn codec_and_layer_paths_do_not_allocate() {
    use ringsfu::media::layers::{Action, LayerSelector, LayerTarget, PacketMeta, SeqTsRewriter};
    use ringsfu::wire::codec::{self, Codec, av1_dd, vp8, vp9};
    use std::time::{Duration, Instant};
    let codecs = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];
    for s in seeds("codec_inspect") {
        let mut copy = s.clone();
        no_alloc("codec inspect and rewrite", || {
            let (sel, p) = copy.split_first_mut().unwrap();
            let c = codecs[*sel as usize & 3];
            let _ = codec::inspect(c, p, *sel & 0x80 != 0);
            let _ = vp8::rewrite_picture_id(p, 77, Some(3));
            let _ = vp9::rewrite_picture_id(p, 77, Some(3));
        });
    }
    for s in seeds("av1_dd") {
        let n = s[0] as usize;
        let first = av1_dd::parse(&s[1..1 + n], None).unwrap();
        let st = first.new_structure;
        no_alloc("av1 dependency descriptor", || {
            let p = av1_dd::parse(&s[1..1 + n], None).unwrap();
            assert_eq!(p.new_structure.is_some(), st.is_some());
            let _ = av1_dd::parse(&[0x43, 0, 5], st.as_ref());
        });
    }
    let t0 = Instant::now();
    let target = LayerTarget { encoding: 0, spatial: 0, temporal: 0 };
    let mut sel = LayerSelector::new(target, Duration::from_millis(300));
    let mut rw = SeqTsRewriter::new(9, 90_000, 1);
    let mut pkt = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    pkt.extend_from_slice(&[0x90, 0xE0, 0x80, 0x01, 1, 0x00, 0x10, 0xAA]);
    let mut infos = Vec::new();
    for i in 0..64u16 {
        let mut p = pkt.clone();
        p[2..4].copy_from_slice(&i.to_be_bytes());
        p[15] = i as u8;
        p[17] = ((i % 2) as u8) << 6; // TL0 and TL1 alternate: TL1 dropped
        p[18] = if i == 0 { 0x10 } else { 0x11 };
        infos.push(p);
    }
    no_alloc("layer selection and rewriting", || {
        for (i, p) in infos.iter_mut().enumerate() {
            let v = RtpView::parse(p).unwrap();
            let info = codec::inspect(Codec::Vp8, v.payload(), true).unwrap();
            let meta = PacketMeta {
                encoding: 0,
                ssrc: 5,
                seq: v.sequence_number(),
                timestamp: v.timestamp(),
                marker: true,
            };
            let now = t0 + Duration::from_millis(i as u64 * 33);
            match sel.on_packet(now, &meta, &info).action {
                Action::Forward { marker, switched } => {
                    let out = rw.forward(now, &meta, &info, switched).unwrap();
                    out.apply(Codec::Vp8, p, marker).unwrap();
                    assert!(rw.source_of(out.seq).is_some());
                }
                Action::Drop(r) => {
                    assert!(r.in_current());
                    rw.dropped(&meta, &info);
                }
            }
        }
    });
}
