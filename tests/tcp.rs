//! The tcp gateway end to end.
