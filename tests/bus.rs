//! The backplane and component client through the real `backplane` executable.

use banyan_core::rmpv::Value;

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn publish_reaches_subscriber_across_processes() {
    let bp = BackplaneProc::start().await;
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("to_x").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;
    publisher
        .publish("to_x", &Value::from(5))
        .await
        .expect("published");
    let m = recv(&mut inbox, "the message").await;
    assert_eq!(m.topic(), "to_x");
    assert_eq!(m.value().expect("decodes"), Value::from(5));
}
