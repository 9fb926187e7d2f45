//! A minimal Chrome DevTools Protocol client over tokio-tungstenite: enough to
//! open a page in headless Chromium and read its DOM.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::util::{free_port, within, Proc, DEADLINE};

pub(crate) struct Cdp {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Cdp {
    /// Connects to the browser endpoint Chromium prints
    /// (`ws://127.0.0.1:PORT/devtools/browser/ID`).
    pub(crate) async fn connect(url: &str) -> Cdp {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a DevTools URL: {url}"));
        let tcp = within("the DevTools port", TcpStream::connect(authority))
            .await
            .expect("DevTools accepts");
        let (ws, _) = within(
            "the DevTools handshake",
            tokio_tungstenite::client_async(url, tcp),
        )
        .await
        .expect("DevTools handshake");
        Cdp { ws, next_id: 0 }
    }

    /// Calls `method` (in page session `session`, if any) and returns its
    /// result; events arriving meanwhile are skipped.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.ws
            .send(WsMessage::text(request.to_string()))
            .await
            .expect("DevTools request sent");
        within(&format!("the DevTools answer to {method}"), async {
            loop {
                let frame = self
                    .ws
                    .next()
                    .await
                    .expect("DevTools connection open")
                    .expect("DevTools frame");
                let WsMessage::Text(text) = frame else {
                    continue;
                };
                let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
                if answer["id"] != json!(id) {
                    continue;
                }
                if let Some(error) = answer.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return answer["result"].clone();
            }
        })
        .await
    }

    /// Opens `url` in a new page and returns the page's session id.
    pub(crate) async fn open(&mut self, url: &str) -> String {
        let target = self
            .call("Target.createTarget", json!({"url": url}), None)
            .await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await;
        attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned()
    }

    /// Evaluates a JavaScript expression in the page; returns its value.
    pub(crate) async fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
                Some(session),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Asks the browser to exit.
    pub(crate) async fn close_browser(&mut self) {
        self.next_id += 1;
        let request = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.ws.send(WsMessage::text(request.to_string())).await;
    }
}

/// Headless Chromium with a DevTools connection, and its own profile.
pub(crate) struct Browser {
    pub(crate) proc: Proc,
    pub(crate) cdp: Cdp,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium with `extra` flags; a missing Chromium fails the
    /// test (scripts/test installs Debian's package).
    pub(crate) async fn start(extra: &[&str]) -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| which("chromium"))
            .expect(
                "chromium is not installed: run scripts/test, which installs Debian's chromium package",
            );
        let profile = std::env::temp_dir().join(format!(
            "banyan-ws-chromium-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let mut proc = Proc::spawn(
            "chromium",
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                    "--disable-quic",
                    "--disable-component-update",
                    "--disable-sync",
                    &format!("--user-data-dir={}", profile.display()),
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                ])
                .args(extra)
                .arg("about:blank"),
        );
        let line = proc.wait_for_text("DevTools listening on ").await;
        let url = line.rsplit(' ').next().expect("a DevTools URL").to_owned();
        let cdp = Cdp::connect(&url).await;
        Browser { proc, cdp, profile }
    }

    /// Evaluates `expression` (a JSON text) in the page until `done`
    /// accepts its value, within [`DEADLINE`]. The DOM offers no event to an
    /// outside reader: it is polled, bounded.
    pub(crate) async fn wait_for(
        &mut self,
        session: &str,
        expression: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let shown = self.cdp.evaluate(session, expression).await;
            let state: Value =
                serde_json::from_str(shown.as_str().unwrap_or("{}")).unwrap_or(Value::Null);
            if done(&state) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page did not show {what} within {DEADLINE:?}; its state: {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the browser to exit, waits for it, removes its profile.
    pub(crate) async fn close(mut self) {
        self.cdp.close_browser().await;
        self.proc.wait().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
    })
}
