//! Zero-copy wire codecs (sans-IO): the RFC 7983 demux, STUN and TURN attributes, TURN
//! ChannelData, RTP with header extensions, RTCP compound packets, the DTLS record header.
//! Views borrow the datagram; writers fill a caller-lent buffer; nothing allocates.
