//! The mqtt gateway end to end.
