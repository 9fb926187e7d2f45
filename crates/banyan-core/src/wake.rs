//! Waking a thread that sleeps in `zmq_poll`.
//!
//! ZeroMQ sockets are polled by their own thread; tokio tasks hand it work
//! through channels and, when it sleeps, write one byte to a socket pair that
//! the poll also watches. A flag keeps that syscall off the hot path: it is
//! made only when the thread has said it is about to sleep.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// The two ends of a wake-up channel and the "asleep" flag.
#[derive(Debug)]
pub(crate) struct Wake {
    tx: UnixStream,
    rx: UnixStream,
    asleep: AtomicBool,
}

impl Wake {
    pub(crate) fn new() -> std::io::Result<Wake> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Wake {
            tx,
            rx,
            asleep: AtomicBool::new(false),
        })
    }

    /// The descriptor the sleeping thread polls for input.
    pub(crate) fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Called by the polling thread before it sleeps. Returns with the flag
    /// set; the caller must re-check its queues afterwards (a producer that
    /// queued before seeing the flag will not wake it).
    pub(crate) fn prepare_sleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Called by the polling thread once awake: clears the flag and drains the
    /// bytes written to wake it.
    pub(crate) fn woke(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Called by a producer after it queued work: wakes the thread if it said
    /// it sleeps.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
            self.force();
        }
    }

    /// Wakes the thread whatever its flag says.
    pub(crate) fn force(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        // A full socket buffer means a wake-up is already pending.
        match (&self.tx).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!("wake-up write failed: {e}"),
        }
    }
}
