//! The Banyan ws-gateway (in progress).
