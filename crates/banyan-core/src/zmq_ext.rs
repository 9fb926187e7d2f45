//! The one socket option the `zmq` crate does not wrap.
//!
//! `ZMQ_XPUB_NODROP` makes an XPUB socket answer `EAGAIN` instead of silently
//! dropping a message when a subscriber's queue is full. The client uses it to
//! turn a full queue into back-pressure, the backplane to count what it drops.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_void};

/// Sets `ZMQ_XPUB_NODROP` on an XPUB socket.
pub(crate) fn set_xpub_nodrop(socket: &mut zmq::Socket, nodrop: bool) -> zmq::Result<()> {
    let value: c_int = c_int::from(nodrop);
    // SAFETY: the socket pointer is live for the borrow, the option takes a
    // c_int by pointer and its size, as given.
    let (rc, errno) = unsafe {
        let rc = zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as c_int,
            (&value as *const c_int).cast::<c_void>(),
            std::mem::size_of::<c_int>(),
        );
        (rc, if rc == 0 { 0 } else { zmq_sys::zmq_errno() })
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(zmq::Error::from_raw(errno))
    }
}
