//! DTLS 1.2 for DTLS-SRTP (RFC 5764): certificate, fingerprint, role and key export, sans-IO.
