//! TURN server core (RFC 8656, RFC 6062 framing): allocations, permissions, channels,
//! long-term and TURN REST API credentials, quotas, peer address policy. Sans-IO.
