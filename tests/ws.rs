//! The ws gateway end to end.
