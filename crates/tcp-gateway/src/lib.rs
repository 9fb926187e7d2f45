//! The Banyan tcp-gateway (in progress).
