//! The SFU router: publisher tracks, subscriber legs, per-subscriber RTP rewriting, the
//! retransmission ring and RTCP feedback. Sans-IO.
