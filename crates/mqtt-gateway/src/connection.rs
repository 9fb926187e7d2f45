//! The MQTT connection: every place the gateway reaches into rumqttc's event
//! loop beyond its public `poll`, behind one small adapter.
//!
//! Why reach in at all: rumqttc 0.25's event loop takes one request from
//! its channel per `poll` and flushes the socket after each (one `write`
//! system call, and a wake-up of the broker, per message);
//! `max_request_batch` is not used by its MQTT 3.1.1 event loop. So the
//! gateway passes each publish through rumqttc's own session state (packet
//! ids, the in-flight window for QoS 1/2), feeds the packets to the
//! connection's buffered writer, and flushes once per batch. It does so
//! between polls: every flush completes before the next `poll`, which leaves
//! rumqttc's write buffer empty, so a `poll` cancelled to write a batch never
//! drops a packet.
//!
//! The fields used (`state`, `state.events`, `state.collision`, `network`,
//! `pending`, `mqtt_options`, `network_options`) are public in rumqttc
//! 0.25.1, which the workspace pins exactly; a new rumqttc version must pass
//! this module's tests before the pin moves.

use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Request};

use crate::codec::Outgoing;

/// The most messages written to the connection between two flushes.
pub(crate) const BATCH: usize = 1024;

/// What [`Connection::publish`] handed to the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Publishes.
    pub(crate) messages: u64,
    /// Bytes of their payloads.
    pub(crate) bytes: u64,
}

/// One MQTT connection (re-established by [`Connection::poll`] after a
/// failure), with batched writes.
pub(crate) struct Connection {
    eventloop: EventLoop,
}

impl Connection {
    pub(crate) fn new(options: MqttOptions) -> Connection {
        // Nothing goes through rumqttc's request channel: every packet is
        // written here.
        Connection {
            eventloop: EventLoop::new(options, 1),
        }
    }

    /// rumqttc's `poll`: connects when not connected, reads what the broker
    /// sends, answers its acknowledgements and pings. On its own failures it
    /// moves what was unacknowledged to the pending list
    /// ([`Connection::take_unacknowledged`]).
    pub(crate) async fn poll(&mut self) -> Result<Event, ConnectionError> {
        self.eventloop.poll().await
    }

    /// How many publishes may be written now: QoS 0 is limited by the batch
    /// size only, QoS 1/2 by rumqttc's in-flight window (and none while a
    /// packet id collision is unresolved).
    pub(crate) fn room(&self, qos: QoS) -> usize {
        if self.eventloop.network.is_none() {
            return 0;
        }
        if qos == QoS::AtMostOnce {
            return BATCH;
        }
        let state = &self.eventloop.state;
        if state.collision.is_some() {
            return 0;
        }
        let max = self.eventloop.mqtt_options.inflight();
        usize::from(max.saturating_sub(state.inflight())).min(BATCH)
    }

    /// Writes `batch` as publishes of `qos`, then flushes once. Returns how
    /// many were handed to the connection; on an error, those not handed to
    /// it are left in `batch`, in order, and the connection is dropped (as
    /// `poll` does on its own failures). A QoS 0 publish that was being
    /// written when the connection failed is lost, as QoS 0 allows.
    pub(crate) async fn publish(
        &mut self,
        batch: &mut Vec<Outgoing>,
        qos: QoS,
        retain: bool,
    ) -> (Written, Result<(), ConnectionError>) {
        // A broker that takes nothing for this long is given up on, as
        // rumqttc does for its own flushes.
        let deadline = tokio::time::Instant::now() + self.timeout();
        let Some(network) = self.eventloop.network.as_mut() else {
            return (Written::default(), Ok(()));
        };
        let state = &mut self.eventloop.state;
        // rumqttc records an `Outgoing` event per packet for `poll` to hand
        // out; the gateway has no use for them.
        let events = state.events.len();
        let mut written = Written::default();
        let mut result = Ok(());
        let mut items = std::mem::take(batch).into_iter();
        for item in items.by_ref() {
            let size = item.payload.len() as u64;
            let mut publish = Publish::from_bytes(item.topic, qos, item.payload);
            publish.retain = retain;
            let packet = if qos == QoS::AtMostOnce {
                // QoS 0 has no session state: no packet id, nothing to
                // acknowledge.
                Some(Packet::Publish(publish))
            } else {
                // Accepted into the session state, it is rumqttc's to resend
                // (see `take_unacknowledged`) if the write below fails.
                match state.handle_outgoing_packet(Request::Publish(publish)) {
                    Ok(packet) => packet,
                    Err(error) => {
                        result = Err(error.into());
                        break;
                    }
                }
            };
            if let Some(packet) = packet {
                // Writing waits only when the buffer is over its bound
                // (8 KiB) and the socket takes no more.
                match tokio::time::timeout_at(deadline, network.write(packet)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        result = Err(error.into());
                        break;
                    }
                    Err(_) => {
                        result = Err(ConnectionError::FlushTimeout);
                        break;
                    }
                }
            }
            written.messages += 1;
            written.bytes += size;
        }
        // Not handed to the connection: back to the caller, in order.
        batch.extend(items);
        state.events.truncate(events);
        if result.is_ok() {
            result = match tokio::time::timeout_at(deadline, network.flush()).await {
                Ok(flushed) => flushed.map_err(ConnectionError::from),
                Err(_) => Err(ConnectionError::FlushTimeout),
            };
        }
        if result.is_err() {
            self.eventloop.clean();
        }
        (written, result)
    }

    /// Writes one request (a subscription, a DISCONNECT) and flushes; on an
    /// error the connection is dropped.
    pub(crate) async fn request(&mut self, request: Request) -> Result<(), ConnectionError> {
        let timeout = self.timeout();
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(());
        };
        let result = async {
            if let Some(packet) = self.eventloop.state.handle_outgoing_packet(request)? {
                network.write(packet).await?;
            }
            match tokio::time::timeout(timeout, network.flush()).await {
                Ok(flushed) => Ok(flushed?),
                Err(_) => Err(ConnectionError::FlushTimeout),
            }
        }
        .await;
        if result.is_err() {
            self.eventloop.clean();
        }
        result
    }

    /// The publishes rumqttc held unacknowledged when the connection failed.
    /// rumqttc would drop them on a clean-session reconnect; the gateway
    /// queues them again.
    pub(crate) fn take_unacknowledged(&mut self) -> Vec<Outgoing> {
        self.eventloop
            .pending
            .drain(..)
            .filter_map(|request| match request {
                Request::Publish(p) => Some(Outgoing {
                    topic: p.topic,
                    payload: p.payload,
                }),
                // Subscriptions are made anew on each connection.
                _ => None,
            })
            .collect()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.eventloop.network_options.connection_timeout())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A broker that accepts one connection and answers CONNACK; it
    /// acknowledges nothing else.
    async fn broker() -> (TcpListener, MqttOptions) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut options = MqttOptions::new("adapter-test", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(60));
        options.set_inflight(3);
        (listener, options)
    }

    /// Reads one MQTT packet: its first byte and body.
    async fn packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let kind = stream.read_u8().await.expect("packet type");
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = stream.read_u8().await.expect("length");
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("body");
        (kind, body)
    }

    async fn connected(listener: &TcpListener, options: MqttOptions) -> (Connection, TcpStream) {
        let mut connection = Connection::new(options);
        let accept = async {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let (kind, _) = packet(&mut stream).await;
            assert_eq!(kind >> 4, 1, "CONNECT");
            stream.write_all(&[0x20, 2, 0, 0]).await.expect("CONNACK");
            stream
        };
        let (event, stream) = tokio::join!(connection.poll(), accept);
        assert!(matches!(event, Ok(Event::Incoming(Packet::ConnAck(_)))));
        (connection, stream)
    }

    fn outgoing(n: u8) -> Outgoing {
        Outgoing {
            topic: format!("t/{n}"),
            payload: Bytes::from(vec![n]),
        }
    }

    #[tokio::test]
    async fn a_batch_of_qos_0_publishes_arrives_in_order() {
        let (listener, options) = broker().await;
        let (mut connection, mut broker) = connected(&listener, options).await;
        assert_eq!(connection.room(QoS::AtMostOnce), BATCH);
        let mut batch: Vec<Outgoing> = (1..=3).map(outgoing).collect();
        let (written, result) = connection.publish(&mut batch, QoS::AtMostOnce, true).await;
        assert!(result.is_ok());
        assert_eq!((written.messages, written.bytes, batch.len()), (3, 3, 0));
        for n in 1..=3u8 {
            let (kind, body) = packet(&mut broker).await;
            assert_eq!(kind, 0x31, "PUBLISH, QoS 0, retained");
            let topic = format!("t/{n}");
            assert_eq!(&body[2..2 + topic.len()], topic.as_bytes());
            assert_eq!(body.last(), Some(&n));
        }
    }

    #[tokio::test]
    async fn qos_1_fills_the_in_flight_window_and_unacknowledged_publishes_come_back() {
        let (listener, options) = broker().await;
        let (mut connection, broker) = connected(&listener, options).await;
        assert_eq!(connection.room(QoS::AtLeastOnce), 3);
        let mut batch: Vec<Outgoing> = (1..=2).map(outgoing).collect();
        let (written, result) = connection
            .publish(&mut batch, QoS::AtLeastOnce, false)
            .await;
        assert!(result.is_ok());
        assert_eq!(written.messages, 2);
        assert_eq!(connection.room(QoS::AtLeastOnce), 1, "two in flight");
        // The broker goes away without acknowledging: poll fails and the
        // two publishes are handed back, in order.
        drop(broker);
        drop(listener);
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if connection.poll().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(failed.is_ok(), "the connection failure is seen");
        assert_eq!(connection.room(QoS::AtLeastOnce), 0, "not connected");
        let back: Vec<String> = connection
            .take_unacknowledged()
            .into_iter()
            .map(|o| o.topic)
            .collect();
        assert_eq!(back, ["t/1", "t/2"]);
        assert!(connection.take_unacknowledged().is_empty());
    }
}
