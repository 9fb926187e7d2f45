//! `tgw`.
fn main() {}
