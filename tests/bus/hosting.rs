//! Backplanes started on demand (a component that found none hosts one)
//! give way to a `backplane` started later on the same ports; backplanes
//! started on purpose do not.

use std::process::Command;

use banyan_core::rmpv::Value;
use banyan_core::{Client, ClientConfig, Ending, Messages};

use crate::util::*;

/// The number at the end of a banner line such as `Publisher  Port = 43124`.
fn port_of(line: &str) -> u16 {
    line.rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

async fn connect(publisher_port: u16, subscriber_port: u16) -> (Client, Messages) {
    let config = ClientConfig {
        publisher_port,
        subscriber_port,
        ..ClientConfig::default()
    };
    within("a client to connect", Client::connect(&config))
        .await
        .expect("client connects")
}

/// Receives the next message on `topic`, skipping others.
async fn recv_on(messages: &mut Messages, topic: &str) -> Value {
    loop {
        let message = recv(messages, &format!("a message on {topic:?}")).await;
        if message.topic() == topic {
            return message.value().expect("decodes");
        }
    }
}

/// `a` and `b` exchange `n` numbered messages each way, none lost.
async fn exchange(a: &Client, a_in: &mut Messages, b: &Client, b_in: &mut Messages, n: u64) {
    for i in 0..n {
        a.publish("to_b", &Value::from(i)).await.expect("published");
        b.publish("to_a", &Value::from(i)).await.expect("published");
    }
    for i in 0..n {
        assert_eq!(
            recv_on(b_in, "to_b").await,
            Value::from(i),
            "a -> b, message {i}"
        );
        assert_eq!(
            recv_on(a_in, "to_a").await,
            Value::from(i),
            "b -> a, message {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backplane_takes_the_bus_over_from_the_monitor_that_hosts_it() {
    // Free ports, read back from the banner.
    let mut monitor = Proc::spawn(
        "monitor",
        Command::new(exe("monitor")).args(["-p", "0", "-s", "0"]),
    );
    let subscriber_port = port_of(&monitor.wait_for_text("Subscriber Port = ").await);
    let publisher_port = port_of(&monitor.wait_for_text("Publisher  Port = ").await);
    monitor.wait_for_text("*****").await;

    let (a, mut a_in) = connect(publisher_port, subscriber_port).await;
    within(
        "the monitor's subscription",
        a.wait_for_subscriber("before"),
    )
    .await
    .expect("open");
    a.publish("before", &Value::from("hosted"))
        .await
        .expect("published");
    monitor
        .wait_for("the message before the move", |l| l == "before hosted")
        .await;

    let mut bp = BackplaneProc::start_on(publisher_port, subscriber_port, &[]).await;
    bp.proc
        .expect_text("took the bus over from the on-demand backplane of process")
        .await;
    monitor
        .expect_text(&format!(
            "handing the bus over to the backplane started by process {}",
            bp.proc.pid()
        ))
        .await;

    // A client that connects now can only reach the new backplane: the
    // monitor is on it once this client sees its subscription.
    let (b, mut b_in) = connect(publisher_port, subscriber_port).await;
    within(
        "the monitor's subscription through the new backplane",
        b.wait_for_subscriber("after"),
    )
    .await
    .expect("open");
    b.publish("after", &Value::from("moved"))
        .await
        .expect("published");
    monitor
        .wait_for("the message after the move", |l| l == "after moved")
        .await;

    // The client from before the move is on it too once a subscription it
    // makes now is routed; nothing published from then on is lost.
    a.subscribe("to_a")
        .await
        .expect("subscribed after the move");
    b.subscribe("to_b").await.expect("subscribed");
    within("a to learn b's subscription", a.wait_for_subscriber("to_b"))
        .await
        .expect("open");
    exchange(&a, &mut a_in, &b, &mut b_in, 100).await;
    monitor
        .wait_for("the monitor to see the exchange", |l| l == "to_a 99")
        .await;

    // The bus outlives the component that started it.
    assert_eq!(monitor.stop(false).await, Some(0));
    within(
        "the monitor's subscription to go",
        a.wait_for_no_subscriber("after"),
    )
    .await
    .expect("open");
    exchange(&a, &mut a_in, &b, &mut b_in, 100).await;
}

/// A Rust program's `attach(None, ..)` hosts the backplane in-process; a
/// `backplane` started later takes it over, and the program's own client
/// follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_backplane_takes_over_from_a_library_program_hosting_one() {
    let config = ClientConfig {
        publisher_port: 0,
        subscriber_port: 0,
        ..ClientConfig::default()
    };
    let mut hosted = within("attach", banyan_core::attach(None, config))
        .await
        .expect("attaches");
    let hosted_bp = hosted
        .embedded
        .take()
        .expect("no backplane ran: one is hosted");
    let (publisher_port, subscriber_port) = (hosted.publisher_port, hosted.subscriber_port);
    hosted.client.subscribe("to_a").await.expect("subscribed");

    let bp = BackplaneProc::start_on(publisher_port, subscriber_port, &[]).await;
    assert_eq!(
        within("the hosted backplane to let go", hosted_bp.ended()).await,
        Ending::HandedOver { pid: bp.proc.pid() }
    );
    let (b, mut b_in) = connect(publisher_port, subscriber_port).await;
    b.subscribe("to_b").await.expect("subscribed");
    hosted
        .client
        .subscribe("to_a")
        .await
        .expect("subscribed after the move");
    within(
        "the program to learn b's subscription",
        hosted.client.wait_for_subscriber("to_b"),
    )
    .await
    .expect("open");
    within(
        "b to learn the program's subscription",
        b.wait_for_subscriber("to_a"),
    )
    .await
    .expect("open");
    exchange(&hosted.client, &mut hosted.messages, &b, &mut b_in, 100).await;
    drop(hosted_bp);
}

/// Only a backplane started on demand gives way: a second `backplane` on the
/// ports of a running one says so and exits non-zero, and the first goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_backplane_started_on_purpose_keeps_its_ports() {
    let bp = BackplaneProc::start().await;
    let mut second = Proc::spawn(
        "second backplane",
        Command::new(exe("backplane")).args([
            "-a",
            "127.0.0.1",
            "-p",
            &bp.publisher_port.to_string(),
            "-s",
            &bp.subscriber_port.to_string(),
        ]),
    );
    assert_eq!(second.wait().await, Some(1));
    let expected = format!(
        "a backplane is already running on ports {}/{} (process {}, backplane); this one exits",
        bp.publisher_port,
        bp.subscriber_port,
        bp.proc.pid()
    );
    assert!(second.output().contains(&expected), "{}", second.output());
    let (a, mut a_in) = bp.connect().await;
    let (b, mut b_in) = bp.connect().await;
    a.subscribe("to_a").await.expect("subscribed");
    b.subscribe("to_b").await.expect("subscribed");
    within("a to learn b's subscription", a.wait_for_subscriber("to_b"))
        .await
        .expect("open");
    within("b to learn a's subscription", b.wait_for_subscriber("to_a"))
        .await
        .expect("open");
    exchange(&a, &mut a_in, &b, &mut b_in, 10).await;
}
