//! SRTP / SRTCP (RFC 3711, RFC 7714) protect and unprotect in place, sans-IO.
