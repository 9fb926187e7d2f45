//! A backplane killed and started again on the same ports: the bus resumes
//! within a few ticks of a steady publisher, with its subscriptions.

use std::time::Duration;

use banyan_core::rmpv::Value;
use tokio::time::MissedTickBehavior;

use crate::util::*;

/// The publisher's period: 50 messages a second.
const TICK: Duration = Duration::from_millis(20);
/// Ticks the publisher may emit between the restarted backplane's banner and
/// the arrival of the first message published after it: 0.3 s worth.
const RESUME_TICKS: u64 = 15;
/// Ticks the backplane stays down: a second, as a service manager's restart
/// takes, long enough for a doubling reconnect backoff to have grown.
const DOWN_TICKS: u64 = 50;

fn seq(message: &banyan_core::Message) -> u64 {
    message
        .value()
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("not a tick: {message:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bus_resumes_within_ticks_of_a_backplane_restart() {
    let mut bp = BackplaneProc::start().await;
    let (publisher_port, subscriber_port) = (bp.publisher_port, bp.subscriber_port);
    let (sub, mut inbox) = bp.connect().await;
    sub.subscribe("tick").await.expect("subscribed");
    let (publisher, _) = bp.connect().await;

    // The number of the last tick published so far.
    let (published_tx, mut published) = tokio::sync::watch::channel(0u64);
    let ticker = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            for seq in 1u64.. {
                interval.tick().await;
                published_tx.send_replace(seq);
                if publisher.publish("tick", &Value::from(seq)).await.is_err() {
                    break;
                }
            }
        }
    });
    // While the backplane runs nothing is lost.
    for expected in 1..=5 {
        assert_eq!(seq(&recv(&mut inbox, "a tick").await), expected);
    }

    assert_eq!(bp.proc.kill_hard().await, None, "killed by a signal");
    let killed_at = *published.borrow_and_update();
    within(
        "the publisher's ticks while the backplane is down",
        published.wait_for(|&seq| seq >= killed_at + DOWN_TICKS),
    )
    .await
    .expect("the ticker runs");
    let restarted = BackplaneProc::start_on(publisher_port, subscriber_port, &[]).await;
    let returned_at = *published.borrow();
    let mut last = 5;
    loop {
        let got = seq(&recv(&mut inbox, "a tick published after the backplane's return").await);
        assert!(got > last, "tick {got} after tick {last}: out of order");
        last = got;
        if got > returned_at {
            let now = *published.borrow();
            assert!(
                now - returned_at <= RESUME_TICKS,
                "the first tick published after the restart ({got}) arrived {} ticks after \
                 the backplane was back (at most {RESUME_TICKS} allowed)",
                now - returned_at
            );
            println!(
                "resumed {} ticks of {} ms after the backplane's return",
                now - returned_at,
                TICK.as_millis()
            );
            break;
        }
    }

    // Subscriptions work again: one made after the restart is routed.
    sub.subscribe("after")
        .await
        .expect("subscribed after the restart");
    within(
        "the publisher to learn the new subscription",
        publisher.wait_for_subscriber("after"),
    )
    .await
    .expect("open");
    publisher
        .publish("after", &Value::from("restart"))
        .await
        .expect("published");
    loop {
        if recv(&mut inbox, "the message on \"after\"").await.topic() == "after" {
            break;
        }
    }
    ticker.abort();
    drop(restarted);
}
