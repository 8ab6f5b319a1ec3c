//! SDP offer/answer (JSEP) for the OpenVidu publish and subscribe flows.
