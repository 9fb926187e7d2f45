//! The Banyan mqtt-gateway (in progress).
