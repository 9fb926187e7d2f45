//! A minimal Chrome DevTools Protocol client over tokio-tungstenite: enough to
//! open a page in headless Chromium and read its DOM.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::util::within;

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
    pub(crate) async fn close_browser(mut self) {
        self.next_id += 1;
        let request = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.ws.send(WsMessage::text(request.to_string())).await;
    }
}
