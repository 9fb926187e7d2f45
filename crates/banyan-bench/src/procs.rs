//! The processes a benchmark starts: the real executables found beside the
//! bench's own, and the bench's worker roles. Each is killed when its
//! [`Proc`] is dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::worker::Role;

/// A running child with its output lines collected.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `command` with stdin, stdout and stderr piped.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Proc> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_owned(),
                source,
            })?;
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let streams: [(Box<dyn std::io::Read + Send>, bool); 2] = [
            (
                Box::new(
                    child
                        .stdout
                        .take()
                        .ok_or(Error::Protocol("no stdout".into()))?,
                ),
                true,
            ),
            (
                Box::new(
                    child
                        .stderr
                        .take()
                        .ok_or(Error::Protocol("no stderr".into()))?,
                ),
                false,
            ),
        ];
        for (stream, is_stdout) in streams {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut log) = log.lock() {
                        // Keeps the tail only: a chatty process cannot grow it.
                        if log.len() >= 200 {
                            log.remove(0);
                        }
                        log.push(line.clone());
                    }
                    // stderr too: mosquitto says it runs there.
                    let _ = (is_stdout, tx.send(line));
                }
            });
        }
        Ok(Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            log,
        })
    }

    /// Starts this executable as the worker `role`.
    pub fn worker(name: &str, role: &Role) -> Result<Proc> {
        let exe = std::env::current_exe()?;
        Proc::spawn(
            name,
            Command::new(exe)
                .arg("worker")
                .arg(serde_json::to_string(role)?),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits at most `timeout` for an output line matching `pred`.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        name: self.name.clone(),
                        what: what.to_owned(),
                        seconds: timeout.as_secs(),
                        output: self.output(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Let the stderr reader catch up before showing output.
                    let _ = self.child.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(Error::Ended {
                        name: self.name.clone(),
                        what: what.to_owned(),
                        output: self.output(),
                    });
                }
            }
        }
    }

    /// Waits for the worker event `event` and returns its fields.
    pub fn event(&mut self, event: &str, timeout: Duration) -> Result<Value> {
        let line = self.wait_line(event, timeout, |line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
        })?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Sends a line on the worker's stdin (the go or stop signal).
    pub fn signal(&mut self) -> Result<()> {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// The process's resident memory now and at its peak.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS, in KiB.
    pub rss_kib: u64,
    /// VmHWM (peak resident set), in KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid` (zeros when it cannot be read).
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        Memory::parse(&status)
    }

    fn parse(status: &str) -> Memory {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }
}

/// Where the project's executables are: beside the bench's own.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The path of the executable `name` in `dir`, or a clear error.
pub fn executable(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingExecutable(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak() {
        let status = "Name:\tx\nVmHWM:\t    9000 kB\nVmRSS:\t    4321 kB\n";
        assert_eq!(
            Memory::parse(status),
            Memory {
                rss_kib: 4321,
                peak_kib: 9000
            }
        );
        let own = Memory::of(std::process::id());
        assert!(own.rss_kib > 0 && own.peak_kib >= own.rss_kib);
    }
}
