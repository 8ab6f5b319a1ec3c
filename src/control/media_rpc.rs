//! The JSON-RPC media methods (`publishVideo`, `receiveVideoFrom`, `prepareReceiveVideoFrom`,
//! `unpublishVideo`, `unsubscribeFromVideo`, `reconnectStream`) and the shards' events, on the
//! control plane's one model.
//!
//! Each method checks the caller against the registry, negotiates SDP with the pure functions
//! of [`crate::sdp`], asks the [`MediaEngine`] where the transport goes and sends the shard its
//! command, then records the transport in the registry: a stream holds its publisher's
//! transport (peer id and shard) and what was agreed, a subscription its leg's, a connection
//! the server offers waiting for its answers. The registry is the only place that knows which
//! transport is whose; when it tears a stream, subscription, connection or session down it
//! names the transports to release (`Output::Media`).
//!
//! Locks: the registry's (through [`Inner::with`], never held across an await and released
//! before a command goes to a shard) and, inside the engine, the shards' command senders
//! (held for one send). A shard gets its command before the answer leaves, so the browser's
//! first STUN check finds its transport.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::media::Caller;
use super::registry::{
    AnsweredLeg, PendingOffer, PublishedMedia, ReceivedMedia, Role, TransportRef,
};
use super::{Inner, now_ms, ws};
use crate::dtls::{DtlsRole, Fingerprint};
use crate::media::{
    IceParams, InTrack, MediaEngine, Origin, OutTrack, PeerId, SendError, ShardCommand, ShardEvent,
};
use crate::sdp::{self, OutgoingTrack, SdpError, VideoCodecPolicy};
use crate::signaling::{Params, RpcError, code};

pub(crate) fn sdp_error(e: SdpError) -> RpcError {
    RpcError::new(code::MEDIA_SDP_ERROR, e.to_string())
}

fn busy(e: SendError) -> RpcError {
    RpcError::new(code::GENERIC, e.to_string())
}

/// The browser's DTLS certificate fingerprint from its SDP (SHA-256, what browsers send).
pub(crate) fn remote_fingerprint(d: &sdp::RemoteDescription) -> Result<Fingerprint, RpcError> {
    Fingerprint::sha256(&d.fingerprint)
        .ok_or_else(|| sdp_error(SdpError::Missing("a=fingerprint:sha-256")))
}

fn no_stream(stream: &str) -> RpcError {
    RpcError::new(code::USER_NOT_STREAMING, format!("Stream {stream} is not published"))
}

/// The transport of a new subscriber leg.
struct Link {
    id: PeerId,
    shard: usize,
    ice: IceParams,
    fp: Fingerprint,
    dtls_role: DtlsRole,
}

/// Answers one media JSON-RPC method of a joined participant.
pub(super) fn dispatch(
    inner: &Arc<Inner>,
    engine: &MediaEngine,
    caller: &Caller,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let p = Params(params);
    let rpc = Rpc { inner, engine, caller };
    match method {
        // Spec §4.3: an error here makes the browser raise ICE_CANDIDATE_ERROR. ringsfu is
        // ICE-lite: it learns the browser's addresses from its authenticated checks.
        "onIceCandidate" => Ok(json!({})),
        "publishVideo" => rpc.publish(params, p.str("sdpOffer")?),
        "prepareReceiveVideoFrom" => rpc.prepare_receive(p.str("sender")?),
        "receiveVideoFrom" => {
            let sender = p.str("sender")?;
            if let Some(offer) = p.opt_str("sdpOffer")? {
                rpc.subscribe_client_offer(sender, offer)
            } else if let Some(answer) = p.opt_str("sdpAnswer")? {
                rpc.subscribe_client_answer(sender, answer)
            } else {
                Err(RpcError::new(code::INVALID_PARAMS, "Request element 'sdpOffer' is missing"))
            }
        }
        "unpublishVideo" => rpc.unpublish().map(|()| json!({})),
        "unsubscribeFromVideo" => rpc.unsubscribe(p.str("sender")?).map(|()| json!({})),
        "reconnectStream" => {
            let stream = p.str("stream")?;
            let own = inner.with(|st| st.reg.stream_of(&caller.session_id, &caller.connection_id));
            if own.as_deref() == Some(stream) {
                let offer = match p.opt_str("sdpString")? {
                    Some(s) => s,
                    None => p.str("sdpOffer")?,
                };
                rpc.republish(stream, offer)
            } else if let Some(offer) = p.opt_str("sdpOffer")? {
                rpc.subscribe_client_offer(stream, offer)
            } else {
                let answer = p.str("sdpString")?;
                rpc.subscribe_client_answer(stream, answer).map(|_| json!({}))
            }
        }
        other => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("{other}: not a media method"))),
    }
}

/// One media request: who asks, and what it works with.
struct Rpc<'a> {
    inner: &'a Arc<Inner>,
    engine: &'a MediaEngine,
    caller: &'a Caller,
}

impl Rpc<'_> {
    fn session(&self) -> &str {
        &self.caller.session_id
    }

    fn me(&self) -> &str {
        &self.caller.connection_id
    }

    fn policy(&self, forced: Option<String>) -> VideoCodecPolicy {
        let name = forced.unwrap_or_else(|| self.inner.cfg.sessions.forced_video_codec.clone());
        VideoCodecPolicy::from_openvidu(&name).unwrap_or(VideoCodecPolicy::MediaServerPreferred)
    }

    fn created_at(&self, stream: &str) -> u64 {
        self.inner.with(|st| {
            st.reg
                .session(self.session())
                .and_then(|s| s.stream(stream))
                .map_or(0, |(_, s)| s.created_at)
        })
    }

    fn publish(&self, params: &Map<String, Value>, offer_sdp: &str) -> Result<Value, RpcError> {
        let engine = self.engine;
        let (home, forced) = self.inner.with(|st| {
            match st.reg.role(self.session(), self.me()) {
                Some(Role::Subscriber) => {
                    return Err(RpcError::new(
                        code::USER_UNAUTHORIZED,
                        "Unable to publish video. The user does not have a valid token",
                    ));
                }
                None => return Err(RpcError::new(code::USER_NOT_FOUND, "Participant not found")),
                _ => {}
            }
            if st.reg.stream_of(self.session(), self.me()).is_some() {
                return Err(RpcError::new(
                    code::USER_ALREADY_STREAMING,
                    "The user is already publishing",
                ));
            }
            let home = st
                .reg
                .media_home(self.session(), || engine.choose_home())
                .ok_or_else(|| RpcError::new(code::USER_NOT_FOUND, "Participant not found"))?;
            let forced =
                st.reg.session(self.session()).and_then(|s| s.props.forced_video_codec.clone());
            Ok((home, forced))
        })?;
        let media_opts = ws::media_options_from_params(params)?;
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        let policy = self.policy(forced);
        let id = engine.new_peer_id();
        let (ufrag, pwd) = engine.ice_credentials();
        let local = engine.local_transport(home, &ufrag, &pwd);
        let neg = sdp::answer_publish(&offer, &local, policy).map_err(sdp_error)?;
        let tracks: Vec<InTrack> = neg.media.iter().map(InTrack::from_negotiated).collect();
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        engine
            .send(home, ShardCommand::AddPublisher { id, ice, remote_fingerprint: fp, tracks })
            .map_err(busy)?;
        let published = PublishedMedia {
            at: TransportRef { peer: id, shard: home },
            negotiated: neg.media,
            policy,
            connection_of: (fp, offer.origin_session),
        };
        let recorded = self.inner.with(|st| {
            let stream = st.reg.add_stream(self.session(), self.me(), media_opts, now_ms())?;
            st.reg.set_stream_transport(self.session(), &stream, published);
            Ok::<_, RpcError>(stream)
        });
        let stream_id = match recorded {
            Ok(s) => s,
            Err(e) => {
                engine.release(&[(id, home)]);
                return Err(e);
            }
        };
        self.trickle(self.me(), &stream_id, &neg.sdp);
        tracing::info!(session = %self.session(), stream = %stream_id, peer = id.0, shard = home, "publishing");
        let created_at = self.created_at(&stream_id);
        Ok(json!({"id": stream_id, "createdAt": created_at, "sdpAnswer": neg.sdp}))
    }

    /// `reconnectStream` of the caller's own stream: a new transport behind the same tracks.
    fn republish(&self, stream: &str, offer_sdp: &str) -> Result<Value, RpcError> {
        let published = self.inner.with(|st| st.reg.published(self.session(), stream));
        let Some((_, p)) = published else { return Err(no_stream(stream)) };
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        let (ufrag, pwd) = self.engine.ice_credentials();
        let local = self.engine.local_transport(p.at.shard, &ufrag, &pwd);
        let neg = sdp::answer_publish(&offer, &local, p.policy).map_err(sdp_error)?;
        let same_shape = neg.media.len() == p.negotiated.len()
            && neg
                .media
                .iter()
                .zip(&p.negotiated)
                .all(|(a, b)| a.kind == b.kind && a.codec.same_format(&b.codec));
        if !same_shape {
            return Err(sdp_error(SdpError::Unacceptable(
                "a reconnection must publish the same tracks with the same codecs".into(),
            )));
        }
        let tracks: Vec<InTrack> = neg.media.iter().map(InTrack::from_negotiated).collect();
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        let connection_of = (fp, offer.origin_session);
        let cmd = ShardCommand::RestartPublisher {
            id: p.at.peer,
            ice,
            remote_fingerprint: fp,
            same_connection: p.connection_of == connection_of,
            tracks,
        };
        self.engine.send(p.at.shard, cmd).map_err(busy)?;
        let renewed =
            PublishedMedia { at: p.at, negotiated: neg.media, policy: p.policy, connection_of };
        self.inner.with(|st| st.reg.set_stream_transport(self.session(), stream, renewed));
        self.trickle(self.me(), stream, &neg.sdp);
        let created_at = self.created_at(stream);
        Ok(json!({"id": stream, "createdAt": created_at, "sdpAnswer": neg.sdp}))
    }

    fn unpublish(&self) -> Result<(), RpcError> {
        self.inner.with(|st| {
            let stream = st
                .reg
                .stream_of(self.session(), self.me())
                .ok_or_else(|| RpcError::new(code::USER_NOT_STREAMING, "Not publishing"))?;
            st.reg
                .remove_stream(self.session(), &stream, "unpublish", false, now_ms())
                .map_err(|_| RpcError::new(code::USER_NOT_STREAMING, "Not publishing"))
        })
    }

    /// `sender` is the publisher's connection id (a stream id is accepted too).
    fn unsubscribe(&self, sender: &str) -> Result<(), RpcError> {
        self.inner.with(|st| {
            let stream = if sender.starts_with("str_") {
                Some(sender.to_string())
            } else {
                st.reg.stream_of(self.session(), sender)
            };
            let Some(stream) = stream else {
                return Err(RpcError::new(
                    code::USER_NOT_FOUND,
                    format!("Participant {sender} is not publishing"),
                ));
            };
            st.reg.remove_subscriber(self.session(), self.me(), &stream, now_ms())
        })
    }

    /// The publisher of `stream` and the outgoing tracks of a new leg ([`outgoing_of`]).
    fn outgoing(
        &self,
        stream: &str,
    ) -> Result<(String, PublishedMedia, Vec<OutgoingTrack>), RpcError> {
        outgoing_of(self.inner, self.caller, stream)
    }

    /// The shard of a new subscriber leg of a stream published on `home`.
    fn place(&self, home: usize) -> usize {
        let legs = self.inner.with(|st| st.reg.legs_on(self.session(), home));
        self.engine.place_subscriber(home, legs)
    }

    fn subscribe_client_offer(&self, stream: &str, offer_sdp: &str) -> Result<Value, RpcError> {
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        if let Some(answer) = self.resubscribe(stream, &offer, fp)? {
            return Ok(answer);
        }
        let (owner, publisher, outgoing) = self.outgoing(stream)?;
        let shard = self.place(publisher.at.shard);
        let id = self.engine.new_peer_id();
        let (ufrag, pwd) = self.engine.ice_credentials();
        let local = self.engine.local_transport(shard, &ufrag, &pwd);
        let neg = sdp::answer_subscribe(&offer, &local, &outgoing).map_err(sdp_error)?;
        let tracks = OutTrack::for_answer(&neg.media, &outgoing);
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        let link = Link { id, shard, ice, fp, dtls_role: DtlsRole::Server };
        let answered = AnsweredLeg { connection_of: (fp, offer.origin_session), outgoing };
        self.attach_subscriber(stream, &publisher, link, tracks, Some(answered))?;
        let endpoint = format!("{}_{stream}", self.me());
        self.trickle(&owner, &endpoint, &neg.sdp);
        Ok(json!({"sdpAnswer": neg.sdp}))
    }

    /// A client offer for a stream the caller already receives, from the certificate of that
    /// leg: the same peer connection renegotiating (an ICE restart, `restartIce()`). The leg
    /// stays, with its SSRCs and sequence numbers; the answer announces the same tracks with
    /// new ICE credentials. `None`: not such an offer (openvidu-browser reconnects with a new
    /// peer connection, whose certificate is new), so a new leg replaces the old one.
    fn resubscribe(
        &self,
        stream: &str,
        offer: &sdp::RemoteDescription,
        fp: Fingerprint,
    ) -> Result<Option<Value>, RpcError> {
        let found = self.inner.with(|st| {
            let rec = st.reg.received(self.session(), self.me(), stream)?;
            let same = |l: &AnsweredLeg| l.connection_of == (fp, offer.origin_session);
            let leg = rec.answered.filter(same)?;
            let (owner, _) = st.reg.published(self.session(), stream)?;
            Some((rec.at, leg, owner))
        });
        let Some((at, leg, owner)) = found else { return Ok(None) };
        let (ufrag, pwd) = self.engine.ice_credentials();
        let local = self.engine.local_transport(at.shard, &ufrag, &pwd);
        let neg = sdp::answer_subscribe(offer, &local, &leg.outgoing).map_err(sdp_error)?;
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        let cmd = ShardCommand::RestartSubscriber { id: at.peer, ice, remote_fingerprint: fp };
        self.engine.send(at.shard, cmd).map_err(busy)?;
        let endpoint = format!("{}_{stream}", self.me());
        self.trickle(&owner, &endpoint, &neg.sdp);
        tracing::info!(session = %self.session(), stream, subscriber = %self.me(), peer = at.peer.0, "subscriber renegotiated its transport");
        Ok(Some(json!({"sdpAnswer": neg.sdp})))
    }

    fn prepare_receive(&self, stream: &str) -> Result<Value, RpcError> {
        let (owner, publisher, outgoing) = self.outgoing(stream)?;
        let shard = self.place(publisher.at.shard);
        let (ufrag, pwd) = self.engine.ice_credentials();
        let local = self.engine.local_transport(shard, &ufrag, &pwd);
        let offer = sdp::offer_subscribe(&local, &outgoing);
        let sdp_offer = offer.sdp.clone();
        let pending = PendingOffer {
            stream_id: stream.to_string(),
            offer,
            ice_ufrag: ufrag,
            ice_pwd: pwd,
            sources: (0..outgoing.len()).collect(),
            shard,
        };
        self.inner.with(|st| st.reg.put_offer(self.session(), self.me(), pending));
        let endpoint = format!("{}_{stream}", self.me());
        self.trickle(&owner, &endpoint, &sdp_offer);
        Ok(json!({"sdpOffer": sdp_offer}))
    }

    fn subscribe_client_answer(&self, stream: &str, answer_sdp: &str) -> Result<Value, RpcError> {
        let pending = self.inner.with(|st| st.reg.take_offer(self.session(), self.me(), stream));
        let Some(pending) = pending else {
            return Err(RpcError::new(
                code::MEDIA_SDP_ERROR,
                format!(
                    "No offer was made for stream {stream}: call prepareReceiveVideoFrom first"
                ),
            ));
        };
        let published = self.inner.with(|st| st.reg.published(self.session(), stream));
        let Some((_, publisher)) = published else { return Err(no_stream(stream)) };
        let answer = sdp::parse(answer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&answer)?;
        let tracks = answered_tracks(&pending, &answer)?;
        let ice = IceParams {
            local_ufrag: pending.ice_ufrag,
            local_pwd: pending.ice_pwd,
            remote_ufrag: answer.ice_ufrag.clone(),
        };
        // `accept_subscribe_answer` allowed only active or passive.
        let dtls_role =
            if answer.setup == sdp::Setup::Passive { DtlsRole::Client } else { DtlsRole::Server };
        let link = Link { id: self.engine.new_peer_id(), shard: pending.shard, ice, fp, dtls_role };
        self.attach_subscriber(stream, &publisher, link, tracks, None)?;
        Ok(json!({}))
    }

    /// Sends the shard its new subscriber leg, then records the subscription (replacing an
    /// earlier one of the caller to the same stream, whose transport the registry releases).
    fn attach_subscriber(
        &self,
        stream: &str,
        publisher: &PublishedMedia,
        link: Link,
        tracks: Vec<OutTrack>,
        answered: Option<AnsweredLeg>,
    ) -> Result<(), RpcError> {
        let Link { id, shard, ice, fp, dtls_role } = link;
        // A leg on another shard than its publisher's gets it through the shard mesh.
        let origin = (shard != publisher.at.shard).then(|| Origin {
            shard: publisher.at.shard,
            tracks: publisher.negotiated.iter().map(InTrack::from_negotiated).collect(),
        });
        let cmd = ShardCommand::AddSubscriber {
            id,
            publisher: publisher.at.peer,
            ice,
            remote_fingerprint: fp,
            dtls_role,
            tracks,
            origin,
        };
        self.engine.send(shard, cmd).map_err(busy)?;
        let received = ReceivedMedia { at: TransportRef { peer: id, shard }, answered };
        let recorded = self.inner.with(|st| {
            st.reg.add_subscriber(self.session(), self.me(), stream, now_ms())?;
            st.reg.set_subscription_transport(self.session(), self.me(), stream, received);
            Ok::<_, RpcError>(())
        });
        if let Err(e) = recorded {
            self.engine.release(&[(id, shard)]);
            return Err(e);
        }
        tracing::info!(session = %self.session(), stream, subscriber = %self.me(), peer = id.0, shard, publisher_shard = publisher.at.shard, "subscribing");
        Ok(())
    }

    /// Trickles the server's candidates of a new transport as `iceCandidate` notifications to
    /// the caller (spec §4.3: the browser adds them to the peer of `owner`'s stream), besides
    /// the same candidates in the SDP, as OpenVidu with Kurento does: a browser that dropped
    /// the SDP's candidates, or a client that only reads trickled ones, still gets them. The
    /// candidates of the first m-section that has any (BUNDLE: one transport). They wait for
    /// the event task's next turn, so the answer or offer that created the transport goes out
    /// first.
    fn trickle(&self, owner: &str, endpoint_name: &str, sdp: &str) {
        trickle_of(self.inner, self.caller, owner, endpoint_name, sdp);
    }
}

/// The legs a browser's answer to a server offer agreed to: each accepted m-line with the
/// publisher track the offer put there.
pub(crate) fn answered_tracks(
    pending: &PendingOffer,
    answer: &sdp::RemoteDescription,
) -> Result<Vec<OutTrack>, RpcError> {
    let agreed = sdp::accept_subscribe_answer(&pending.offer, answer).map_err(sdp_error)?;
    Ok(agreed
        .iter()
        .filter_map(|m| {
            let i = pending.offer.media.iter().position(|o| o.mid == m.mid)?;
            Some(OutTrack::from_negotiated(m, *pending.sources.get(i)?))
        })
        .collect())
}

/// The publisher of `stream` (its owner and transport) and what a subscriber of it will
/// receive: one outgoing track per published track, with fresh SSRCs for this leg.
pub(crate) fn outgoing_of(
    inner: &Inner,
    caller: &Caller,
    stream: &str,
) -> Result<(String, PublishedMedia, Vec<OutgoingTrack>), RpcError> {
    let published = inner.with(|st| st.reg.published(&caller.session_id, stream));
    let Some((owner, p)) = published else { return Err(no_stream(stream)) };
    let cname: String = {
        use rand::Rng;
        let alnum = rand::distr::Alphanumeric;
        rand::rng().sample_iter(&alnum).take(16).map(char::from).collect()
    };
    let tracks = p
        .negotiated
        .iter()
        .map(|m| OutgoingTrack {
            kind: m.kind,
            codec: m.codec.clone(),
            ssrc: rand::random::<u32>() | 1,
            rtx_ssrc: rand::random::<u32>() | 1,
            cname: cname.clone(),
            stream_id: stream.to_string(),
            track_id: format!("{}_{}", m.kind.as_str(), stream),
        })
        .collect();
    Ok((owner, p, tracks))
}

/// Queues the server's candidates of a new transport (from its SDP) as `iceCandidate`
/// notifications to `caller` (see `Rpc::trickle`).
pub(crate) fn trickle_of(
    inner: &Inner,
    caller: &Caller,
    owner: &str,
    endpoint_name: &str,
    sdp: &str,
) {
    let mut found = Vec::new();
    let (mut mline, mut mid) = (None::<u32>, String::new());
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if !found.is_empty() {
                break;
            }
            mline = Some(mline.map_or(0, |i| i + 1));
            mid.clear();
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            m.trim().clone_into(&mut mid);
        } else if let (Some(c), Some(i)) = (line.strip_prefix("a="), mline)
            && c.starts_with("candidate:")
        {
            found.push((c.trim().to_string(), i));
        }
    }
    if found.is_empty() {
        return;
    }
    inner.with(|st| {
        for (candidate, index) in found {
            st.trickle.push((
                caller.session_id.clone(),
                caller.connection_id.clone(),
                json!({"senderConnectionId": owner, "endpointName": endpoint_name,
                       "sdpMLineIndex": index, "sdpMid": mid, "candidate": candidate}),
            ));
        }
    });
    inner.trickle_ready.notify_one();
}

/// Sends the trickled candidates that wait.
pub(super) fn flush_trickle(inner: &Inner) {
    inner.with(|st| {
        for (session, to, params) in std::mem::take(&mut st.trickle) {
            st.reg.notify_connection(&session, &to, "iceCandidate", params);
        }
    });
}

/// Carries out the shards' events: a subscriber leg whose transport ended leaves its
/// subscription without one (the browser reconnects it); a failure is told to its owner as
/// `mediaError`; a publisher that vanished (consent expired, or no `reconnectStream` within
/// the grace) is unpublished with `networkDisconnect`.
pub(crate) fn on_shard_events(inner: &Arc<Inner>, engine: &MediaEngine, events: Vec<ShardEvent>) {
    // Events of legs this node hosts for another node's sessions go to that node.
    let events = super::cluster::span::take_hosted(inner, events);
    for ev in events {
        let id = match &ev {
            ShardEvent::Connected { id }
            | ShardEvent::Failed { id, .. }
            | ShardEvent::Closed { id }
            | ShardEvent::Vanished { id, .. }
            | ShardEvent::Rejected { id, .. } => *id,
        };
        inner.with(|st| {
            let owner = st.reg.transport_owner(id);
            let Some((session, connection, stream, publisher)) = owner else {
                if let ShardEvent::Rejected { reason, .. } = ev {
                    tracing::warn!(peer = id.0, reason, "media shard rejected a peer");
                }
                return;
            };
            let leg_gone = |st: &mut super::State| {
                if !publisher && let Some(shard) = st.reg.subscription_transport_gone(id) {
                    engine.gone(shard);
                }
            };
            match ev {
                ShardEvent::Connected { .. } => {
                    tracing::info!(%session, %connection, %stream, publisher, peer = id.0, "media connected");
                }
                ShardEvent::Failed { reason, .. } => {
                    tracing::info!(%session, %connection, %stream, peer = id.0, reason, "media transport failed");
                    // The shard removed a subscriber leg; the browser reconnects it.
                    leg_gone(st);
                    let description = format!("{reason} (stream {stream})");
                    st.reg.notify_connection(
                        &session,
                        &connection,
                        "mediaError",
                        json!({ "error": description }),
                    );
                }
                ShardEvent::Closed { .. } => leg_gone(st),
                ShardEvent::Vanished { reason, .. } => {
                    // The shard removed the publisher and its tracks. As when OpenVidu loses a
                    // participant's network: the stream is destroyed with `networkDisconnect`,
                    // told to everyone (the publisher too, as for a forced unpublish); the
                    // registry releases the stream's transports (the publisher's is already
                    // gone on its shard: its release only uncounts it).
                    tracing::info!(%session, %connection, %stream, peer = id.0, reason, "publisher vanished");
                    if publisher {
                        let _ = st.reg.remove_stream(
                            &session,
                            &stream,
                            "networkDisconnect",
                            true,
                            now_ms(),
                        );
                    }
                }
                ShardEvent::Rejected { reason, .. } => {
                    tracing::warn!(peer = id.0, reason, "media shard rejected a peer");
                    leg_gone(st);
                }
            }
        });
    }
}
