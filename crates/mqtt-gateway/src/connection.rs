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
//!
//! **Packets over the payload limit.** rumqttc's reader checks each packet's
//! announced length against `max_incoming_packet_size` before reading it,
//! and fails the whole connection when it is over: the rest of the stream
//! cannot be found without reading the packet, and its reader offers no way
//! to skip it. A broker then sends the same retained message on every
//! reconnection, and the connection never stays up. So the gateway sets the
//! reader's limit well above `--max-payload` ([`read_limit`]), reads an
//! oversized publish whole, and refuses it itself (the codec's
//! `TooLarge`), on a connection that stays up. The read limit bounds the
//! memory one packet can take; a packet over even that still ends the
//! connection ([`too_large_packet`] recognises it, for the log and the
//! count), and the reconnection backoff paces the retries.

use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Request, StateError,
};

use crate::codec::{Outgoing, MAX_REMAINING_LENGTH};
use crate::routes::MAX_TOPIC_LEN;

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

/// The largest packet body read whole (and refused when over
/// `--max-payload`) when `--max-payload` is smaller: 64 MiB. Big enough for
/// the pictures and firmware images people do put on MQTT, small enough
/// that one packet cannot take a small machine's memory.
pub(crate) const READ_FLOOR: usize = 64 << 20;

/// Room in a packet body beside the payload: the topic, its 2-byte length
/// and a packet id.
const TOPIC_ROOM: usize = MAX_TOPIC_LEN + 4;

/// The largest packet body (MQTT's "remaining length") the connection reads
/// whole for a payload limit of `max_payload`: at least [`READ_FLOOR`],
/// enough for any topic with a `max_payload` payload, at most what MQTT
/// can express.
pub(crate) fn read_limit(max_payload: usize) -> usize {
    max_payload
        .saturating_add(TOPIC_ROOM)
        .clamp(READ_FLOOR, MAX_REMAINING_LENGTH)
}

/// Sets rumqttc's packet limits for a payload limit of `max_payload`: the
/// reader's to [`read_limit`]; the writer's to what MQTT allows, since the
/// codec refuses a payload that does not fit before it reaches rumqttc
/// (whose own refusal would fail the connection).
pub(crate) fn set_packet_limits(options: &mut MqttOptions, max_payload: usize) {
    // rumqttc compares the whole packet: 1 byte of type and up to 4 of
    // length before the body.
    options.set_max_packet_size(read_limit(max_payload), MAX_REMAINING_LENGTH + 5);
}

/// The announced body length of a packet over the read limit, when that is
/// why the connection failed.
pub(crate) fn too_large_packet(error: &ConnectionError) -> Option<usize> {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
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

    /// An MQTT remaining length.
    fn varint(mut len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            if len == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A QoS 0 PUBLISH as a broker sends it.
    fn publish_packet(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
        let mut packet = vec![0x30 | u8::from(retain)];
        packet.extend(varint(2 + topic.len() + payload.len()));
        packet.extend((topic.len() as u16).to_be_bytes());
        packet.extend(topic.as_bytes());
        packet.extend(payload);
        packet
    }

    async fn next_publish(connection: &mut Connection) -> Publish {
        let polled = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match connection.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => return Ok(publish),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
        })
        .await;
        polled
            .expect("a publish within 10 s")
            .expect("the connection stays up")
    }

    #[test]
    fn the_read_limit_is_above_the_payload_limit_and_within_mqtt() {
        assert_eq!(read_limit(1), READ_FLOOR);
        assert_eq!(read_limit(1 << 20), READ_FLOOR);
        assert_eq!(read_limit(READ_FLOOR), READ_FLOOR + TOPIC_ROOM);
        assert_eq!(read_limit(MAX_REMAINING_LENGTH), MAX_REMAINING_LENGTH);
        assert_eq!(read_limit(usize::MAX), MAX_REMAINING_LENGTH);
    }

    #[tokio::test]
    async fn a_publish_over_the_payload_limit_is_read_whole_and_the_connection_stays() {
        let (listener, mut options) = broker().await;
        set_packet_limits(&mut options, 1 << 20);
        let (mut connection, mut broker) = connected(&listener, options).await;
        // 2 MiB, retained, then a small one: rumqttc's own limit (set by
        // the gateway to 1 MiB before) would have failed the connection on
        // the first.
        let big = vec![0x5a; 2 << 20];
        let mut wire = publish_packet("big", &big, true);
        wire.extend(publish_packet("small", b"1", false));
        let writing = tokio::spawn(async move {
            broker.write_all(&wire).await.expect("broker writes");
            broker
        });
        let first = next_publish(&mut connection).await;
        assert_eq!((first.topic.as_str(), first.retain), ("big", true));
        assert_eq!(first.payload.len(), 2 << 20);
        let second = next_publish(&mut connection).await;
        assert_eq!(
            (second.topic.as_str(), &second.payload[..]),
            ("small", &b"1"[..])
        );
        assert_eq!(connection.room(QoS::AtMostOnce), BATCH, "still connected");
        drop(writing.await.expect("broker task"));
    }

    #[tokio::test]
    async fn a_packet_over_the_read_limit_fails_the_connection_and_is_recognised() {
        let (listener, mut options) = broker().await;
        set_packet_limits(&mut options, 1 << 20);
        let (mut connection, mut broker) = connected(&listener, options).await;
        // Only the header: rumqttc refuses on the announced length, before
        // reading (or allocating) the body.
        let announced = read_limit(1 << 20) + 1;
        let mut header = vec![0x30];
        header.extend(varint(announced));
        broker.write_all(&header).await.expect("broker writes");
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(error) = connection.poll().await {
                    return error;
                }
            }
        })
        .await
        .expect("the failure within 10 s");
        assert_eq!(too_large_packet(&failed), Some(announced), "{failed}");
        assert_eq!(connection.room(QoS::AtMostOnce), 0, "not connected");
        assert_eq!(
            too_large_packet(&ConnectionError::FlushTimeout),
            None,
            "other failures are not this one"
        );
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
