//! JSON-RPC 2.0 message framing and the OpenVidu signaling methods, as plain functions over
//! parsed messages; the WebSocket shell lives in `control`.
