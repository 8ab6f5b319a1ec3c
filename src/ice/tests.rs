use super::*;
use crate::wire::stun::{Class, Method, StunView, StunWriter};
use crate::wire::stun_integrity::IntegrityKey;

const LOCAL_UFRAG: &str = "rsfu";
const LOCAL_PWD: &str = "local-password-0123456789";
const REMOTE_UFRAG: &str = "8yQv";

fn remote() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}
fn local() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

#[derive(Clone, Copy)]
struct Req<'a> {
    username: &'a str,
    pwd: &'a str,
    priority: bool,
    use_candidate: bool,
    controlled: bool,
}

fn ok_req() -> Req<'static> {
    Req {
        username: "rsfu:8yQv",
        pwd: LOCAL_PWD,
        priority: true,
        use_candidate: false,
        controlled: false,
    }
}

fn request(r: Req<'_>, txid: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[txid; 12]).unwrap();
    w.username(r.username).unwrap();
    if r.priority {
        w.priority(0x6e7f_1eff).unwrap();
    }
    if r.controlled {
        w.ice_controlled(7).unwrap();
    } else {
        w.ice_controlling(7).unwrap();
    }
    if r.use_candidate {
        w.use_candidate().unwrap();
    }
    w.message_integrity(&IntegrityKey::short_term(r.pwd.as_bytes())).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn send(
    agent: &mut IceLiteAgent,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
) -> (Reply, Vec<u8>) {
    let view = StunView::parse(bytes).unwrap();
    let mut out = vec![0u8; 256];
    let r = agent.handle_stun(now, from, local(), &view, &mut out);
    let n = match r {
        Reply::Success(n) | Reply::Error(n, _) => n,
        Reply::Drop(_) => 0,
    };
    out.truncate(n);
    (r, out)
}

fn agent() -> IceLiteAgent {
    IceLiteAgent::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
}

#[test]
fn check_then_nomination_selects_the_pair() {
    let now = Instant::now();
    let mut a = agent();
    let (r, resp) = send(&mut a, now, remote(), &request(ok_req(), 1));
    assert!(matches!(r, Reply::Success(_)));
    assert!(a.is_valid_remote(remote()));
    assert_eq!(a.poll_event(), None, "no nomination yet");
    assert_eq!(a.state(), IceState::New);
    // The response is what the browser expects.
    let v = StunView::parse(&resp).unwrap();
    assert_eq!(v.class(), Class::SuccessResponse);
    assert_eq!(v.transaction_id(), &[1u8; 12]);
    assert_eq!(v.xor_mapped_address().unwrap(), Some(remote()));
    v.verify_integrity(&IntegrityKey::short_term(LOCAL_PWD.as_bytes())).unwrap();
    v.verify_fingerprint().unwrap();

    let nominate = Req { use_candidate: true, ..ok_req() };
    let (r, _) = send(&mut a, now, remote(), &request(nominate, 2));
    assert!(matches!(r, Reply::Success(_)));
    assert_eq!(a.poll_event(), Some(IceEvent::Selected { remote: remote(), local: local() }));
    assert_eq!(a.selected(), Some((remote(), local())));
    assert_eq!(a.state(), IceState::Connected);
    // Re-nominating the same pair is not a new event.
    send(&mut a, now, remote(), &request(nominate, 3));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn refusals() {
    let now = Instant::now();
    let mut a = agent();
    for (req, code, err) in [
        (Req { username: "rsfu:other", ..ok_req() }, 401, IceError::BadUsername),
        (Req { username: "nope", ..ok_req() }, 401, IceError::BadUsername),
        (Req { pwd: "wrong-password", ..ok_req() }, 401, IceError::BadIntegrity),
        (Req { priority: false, ..ok_req() }, 400, IceError::NoPriority),
        (Req { controlled: true, ..ok_req() }, 487, IceError::RoleConflict),
    ] {
        let (r, resp) = send(&mut a, now, remote(), &request(req, 9));
        assert!(matches!(r, Reply::Error(_, e) if e == err), "{r:?}");
        let v = StunView::parse(&resp).unwrap();
        assert_eq!(v.class(), Class::ErrorResponse);
        assert_eq!(v.error_code().unwrap().map(|(c, _)| c), Some(code));
        assert!(!v.has_integrity(), "error responses carry no integrity");
    }
    assert!(!a.is_valid_remote(remote()), "no refused request creates a pair");
    // A corrupted fingerprint is dropped silently.
    let mut bytes = request(ok_req(), 4);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let (r, _) = send(&mut a, now, remote(), &bytes);
    assert_eq!(r, Reply::Drop(IceError::BadFingerprint));
    // Responses and indications are not ours to answer.
    let mut buf = vec![0u8; 64];
    let mut w =
        StunWriter::new(&mut buf, Class::SuccessResponse, Method::BINDING, &[5; 12]).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    let (r, _) = send(&mut a, now, remote(), &buf[..n]);
    assert_eq!(r, Reply::Drop(IceError::NotBindingRequest));
}

#[test]
fn consent_expires_without_checks_and_is_refreshed_by_them() {
    let t = Instant::now();
    let mut a = agent();
    send(&mut a, t, remote(), &request(Req { use_candidate: true, ..ok_req() }, 1));
    assert!(matches!(a.poll_event(), Some(IceEvent::Selected { .. })));
    assert_eq!(a.poll_timeout(), Some(t + CONSENT_TIMEOUT));
    // A consent check 20 s later moves the deadline.
    let t2 = t + Duration::from_secs(20);
    send(&mut a, t2, remote(), &request(ok_req(), 2));
    assert_eq!(a.poll_timeout(), Some(t2 + CONSENT_TIMEOUT));
    a.handle_timeout(t + CONSENT_TIMEOUT);
    assert_eq!(a.poll_event(), None);
    a.handle_timeout(t2 + CONSENT_TIMEOUT);
    assert_eq!(a.poll_event(), Some(IceEvent::ConsentExpired));
    assert_eq!(a.state(), IceState::Expired);
    assert!(!a.is_valid_remote(remote()));
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn restart_keeps_media_on_the_old_pair_until_renominated() {
    let t = Instant::now();
    let mut a = agent();
    send(&mut a, t, remote(), &request(Req { use_candidate: true, ..ok_req() }, 1));
    a.poll_event();
    a.restart("new1", "new-local-password-0123", "new2");
    assert_eq!(a.selected(), Some((remote(), local())));
    // Old credentials no longer work.
    let (r, _) = send(&mut a, t, remote(), &request(ok_req(), 2));
    assert!(matches!(r, Reply::Error(_, IceError::BadUsername)));
    let other: SocketAddr = "127.0.0.1:50002".parse().unwrap();
    let req = Req {
        username: "new1:new2",
        pwd: "new-local-password-0123",
        use_candidate: true,
        ..ok_req()
    };
    let (r, _) = send(&mut a, t, other, &request(req, 3));
    assert!(matches!(r, Reply::Success(_)));
    assert_eq!(a.poll_event(), Some(IceEvent::Selected { remote: other, local: local() }));
}

#[test]
fn pair_table_is_bounded_and_keeps_the_selected_pair() {
    let t = Instant::now();
    let mut a = agent();
    send(&mut a, t, remote(), &request(Req { use_candidate: true, ..ok_req() }, 1));
    for i in 0..100u16 {
        let from: SocketAddr = format!("127.0.0.2:{}", 10000 + i).parse().unwrap();
        send(&mut a, t + Duration::from_millis(i as u64 + 1), from, &request(ok_req(), 2));
    }
    assert!(a.pairs.len() <= MAX_PAIRS);
    assert_eq!(a.selected(), Some((remote(), local())));
    assert!(a.is_valid_remote("127.0.0.2:10099".parse().unwrap()));
}

#[test]
fn hostile_datagrams_do_not_panic() {
    let t = Instant::now();
    let mut a = agent();
    let base = request(Req { use_candidate: true, ..ok_req() }, 1);
    let mut seed = 0x1234_5678u32;
    for _ in 0..5000 {
        let mut bytes = base.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let i = seed as usize % bytes.len();
            bytes[i] ^= (seed >> 8) as u8;
        }
        if let Ok(v) = StunView::parse(&bytes) {
            let mut out = [0u8; 256];
            let _ = a.handle_stun(t, remote(), local(), &v, &mut out);
        }
        let mut tiny = [0u8; 8];
        if let Ok(v) = StunView::parse(&base) {
            assert!(matches!(a.handle_stun(t, remote(), local(), &v, &mut tiny), Reply::Drop(_)));
        }
    }
}
