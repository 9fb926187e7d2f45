//! Where log lines go: a writer that never stops the process.
//!
//! s3-extend's launchers (`s3a`, `s3e`, ...) start `backplane` and `wsgw`
//! with stdout and stderr connected to pipes that they never read. Once such
//! a pipe holds 64 KiB, every write to it waits forever, and a process
//! logging to it stops in the middle of a `tracing` call: `wsgw` stopped
//! answering pages after about 350 of them had come and gone. So log lines
//! are handed to a thread of their own ("banyan-log") that writes them, and
//! the logging thread waits for its line only while the sink keeps up:
//!
//! * while the sink takes lines, each log call returns once its line is
//!   written (so lines keep their order and none is lost at exit);
//! * a line the sink has not taken within [`PATIENCE`] marks the sink
//!   stuck: from then on log calls queue their line and return at once; a
//!   full queue ([`QUEUE`] lines) drops new lines, counted;
//! * once the sink takes a line again it is not stuck any more, and it is
//!   told how many lines were dropped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// How long a log call waits for its line to be written before it counts
/// the sink as stuck.
pub const PATIENCE: Duration = Duration::from_millis(250);

/// Lines queued for a stuck sink before new ones are dropped.
pub const QUEUE: usize = 4096;

/// A line, and whom to tell once it is written.
type Line = (Vec<u8>, Option<SyncSender<()>>);

#[derive(Debug, Default)]
struct Shared {
    stuck: AtomicBool,
    dropped: AtomicU64,
}

/// A `tracing_subscriber` writer in front of a sink that may stop taking
/// lines (see the module docs). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lossless {
    queue: SyncSender<Line>,
    shared: Arc<Shared>,
}

impl Lossless {
    /// Writes to `sink` from a new thread named `banyan-log`.
    pub fn new(sink: impl Write + Send + 'static) -> std::io::Result<Lossless> {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        std::thread::Builder::new()
            .name("banyan-log".to_owned())
            .spawn(move || write_lines(sink, &lines, &state))?;
        Ok(Lossless { queue, shared })
    }

    /// Lines dropped so far because the sink was stuck and the queue full
    /// (and not yet told to the sink).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every line queued so far is written, for at most
    /// `timeout`; `false` when the sink did not take them in time.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (written, wait) = mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut marker = Some((Vec::new(), Some(written)));
        while let Some(line) = marker.take() {
            match self.queue.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(line)) if std::time::Instant::now() < deadline => {
                    marker = Some(line);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        wait.recv_timeout(left).is_ok()
    }

    fn send(&self, line: Vec<u8>) {
        if self.shared.stuck.load(Ordering::Acquire) {
            if let Err(TrySendError::Full(_)) = self.queue.try_send((line, None)) {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let (written, wait) = mpsc::sync_channel(1);
        match self.queue.try_send((line, Some(written))) {
            Ok(()) => {
                if wait.recv_timeout(PATIENCE).is_err() {
                    self.shared.stuck.store(true, Ordering::Release);
                }
            }
            Err(TrySendError::Full(_)) => {
                self.shared.stuck.store(true, Ordering::Release);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread is gone (it never ends while a sender lives).
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The writer thread: every line, in order; once the lines queued in a
/// stuck spell are written, how many were dropped after them.
fn write_lines(mut sink: impl Write, lines: &Receiver<Line>, shared: &Shared) {
    loop {
        let (line, written) = match lines.try_recv() {
            Ok(line) => line,
            Err(TryRecvError::Empty) => {
                tell_drops(&mut sink, shared);
                match lines.recv() {
                    Ok(line) => line,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        if line.is_empty() {
            // A `sync` marker: what it waits for includes the count of
            // what was dropped before it.
            tell_drops(&mut sink, shared);
        } else {
            let _ = sink.write_all(&line).and_then(|()| sink.flush());
        }
        shared.stuck.store(false, Ordering::Release);
        if let Some(written) = written {
            let _ = written.send(());
        }
    }
}

fn tell_drops(sink: &mut impl Write, shared: &Shared) {
    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let note = format!("{dropped} log lines were dropped: nothing was reading this output\n");
        let _ = sink.write_all(note.as_bytes()).and_then(|()| sink.flush());
    }
}

/// One log event's bytes, handed over when the event is complete.
#[derive(Debug)]
pub struct Event<'a> {
    to: &'a Lossless,
    bytes: Vec<u8>,
}

impl Write for Event<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.to.send(std::mem::take(&mut self.bytes));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lossless {
    type Writer = Event<'a>;

    fn make_writer(&'a self) -> Event<'a> {
        Event {
            to: self,
            bytes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use super::*;

    /// Whether the gate is open, and what passed it.
    type GateState = Mutex<(bool, Vec<u8>)>;

    /// A sink that takes nothing until opened, then records everything.
    #[derive(Clone, Default)]
    struct Gate(Arc<(GateState, Condvar)>);

    impl Gate {
        fn open(&self) {
            let (state, opened) = &*self.0;
            state.lock().expect("gate").0 = true;
            opened.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0 .0.lock().expect("gate").1).into_owned()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (state, opened) = &*self.0;
            let mut state = opened
                .wait_while(state.lock().expect("gate"), |(open, _)| !*open)
                .expect("gate");
            state.1.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &Lossless, text: &str) {
        let mut event = tracing_subscriber::fmt::MakeWriter::make_writer(writer);
        event.write_all(text.as_bytes()).expect("buffered");
    }

    #[test]
    fn a_sink_that_takes_nothing_never_stops_the_logger() {
        let gate = Gate::default();
        let writer = Lossless::new(gate.clone()).expect("thread");
        // The first line waits its patience, the rest are queued or dropped
        // at once: every call returns while the sink takes nothing.
        let (done, returned) = std::sync::mpsc::channel();
        std::thread::spawn({
            let writer = writer.clone();
            move || {
                for n in 0..QUEUE + 100 {
                    log(&writer, &format!("line {n}\n"));
                }
                let _ = done.send(());
            }
        });
        returned
            .recv_timeout(Duration::from_secs(20))
            .expect("the log calls returned while the sink took nothing (waited 20 s)");
        assert!(writer.dropped() > 0);
        gate.open();
        // Once the sink takes lines, every queued line and the count arrive,
        // and a log call waits for its line again.
        assert!(writer.sync(Duration::from_secs(10)), "the queue drained");
        log(&writer, "after\n");
        let text = gate.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..3], ["line 0", "line 1", "line 2"]);
        assert_eq!(lines[QUEUE], format!("line {QUEUE}"), "queued lines kept");
        assert!(
            lines[QUEUE + 1].ends_with("log lines were dropped: nothing was reading this output"),
            "{}",
            lines[QUEUE + 1]
        );
        assert_eq!(lines[QUEUE + 2..], ["after"]);
    }

    #[test]
    fn a_sink_that_keeps_up_gets_every_line_before_the_call_returns() {
        let gate = Gate::default();
        gate.open();
        let writer = Lossless::new(gate.clone()).expect("thread");
        for n in 0..100 {
            log(&writer, &format!("{n}\n"));
            assert!(gate.text().ends_with(&format!("{n}\n")));
        }
        assert_eq!(writer.dropped(), 0);
    }
}
