//! `wsgw`.
fn main() {}
