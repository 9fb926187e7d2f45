//! The one loop that takes messages from the bus into the peers' outboxes,
//! holding the bus back while a connected peer's queue is full, for at most
//! the stall grace.
//!
//! A [`Route`] says which outboxes a bus message goes to and what it becomes
//! (JSON text for pages, an MQTT publication, the raw message for a
//! device): converted once, shared by every outbox of the message. When an
//! outbox refuses it ([`Pushed::Full`]), the intake reads nothing more from
//! the bus (the bus then holds back its publishers: nothing is lost) until
//! that outbox has room. A peer that neither makes room nor takes a byte for
//! [`QueuePolicy::stall_grace`](crate::QueuePolicy::stall_grace) is marked
//! stalled and loses its own oldest messages instead, so it delays the bus
//! once, by the grace, and never again until it has caught up.

use std::sync::Arc;
use std::time::Duration;

use banyan_core::{Message, Messages};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::outbox::{Outbox, Pushed, Weigh};

/// Bus messages delivered in a row, from what the bus already handed over,
/// before the loop looks at cancellation again.
const BATCH: usize = 256;

/// Where bus messages go.
pub trait Route {
    /// What an outbox holds.
    type Item: Weigh + Clone;

    /// Converts `message` for the outboxes it goes to, pushing them onto
    /// `targets` (left empty: the message goes nowhere). `None` when it
    /// goes nowhere (no outbox wants it, or it cannot be converted: the
    /// route logs and counts that).
    fn route(
        &mut self,
        message: Message,
        targets: &mut Vec<Arc<Outbox<Self::Item>>>,
    ) -> Option<Self::Item>;
}

/// A route to one outbox: every message, converted by a function
/// (`None`: not forwarded).
#[derive(Debug)]
pub struct ToOne<T, F> {
    outbox: Arc<Outbox<T>>,
    convert: F,
}

impl<T, F> ToOne<T, F> {
    /// Every bus message to `outbox`, converted by `convert`.
    pub fn new(outbox: Arc<Outbox<T>>, convert: F) -> ToOne<T, F> {
        ToOne { outbox, convert }
    }
}

impl<T: Weigh + Clone, F: FnMut(Message) -> Option<T>> Route for ToOne<T, F> {
    type Item = T;

    fn route(&mut self, message: Message, targets: &mut Vec<Arc<Outbox<T>>>) -> Option<T> {
        let item = (self.convert)(message)?;
        targets.push(self.outbox.clone());
        Some(item)
    }
}

/// Takes bus messages from `messages` into the outboxes `route` names until
/// `token` is cancelled (`Ok`) or the bus stream ends
/// ([`Error::BusClosed`]). `grace` is the stall grace.
pub async fn run<R: Route>(
    messages: &mut Messages,
    route: &mut R,
    grace: Duration,
    token: &CancellationToken,
) -> Result<()> {
    let mut targets = Vec::new();
    let mut pending: Option<Pending<R::Item>> = None;
    loop {
        if let Some(waiting) = &mut pending {
            tokio::select! {
                biased;
                () = token.cancelled() => return Ok(()),
                () = waiting.wait(grace) => {
                    if waiting.settle(grace) {
                        pending = None;
                    }
                }
            }
            continue;
        }
        let message = tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            message = messages.recv() => message.ok_or(Error::BusClosed)?,
        };
        pending = deliver(message, route, &mut targets);
        // What the bus already handed over goes without another turn.
        for _ in 1..BATCH {
            if pending.is_some() {
                break;
            }
            let Some(message) = messages.try_recv() else {
                break;
            };
            pending = deliver(message, route, &mut targets);
        }
    }
}

/// Pushes one message to its outboxes; the ones that refused it are pending.
fn deliver<R: Route>(
    message: Message,
    route: &mut R,
    targets: &mut Vec<Arc<Outbox<R::Item>>>,
) -> Option<Pending<R::Item>> {
    targets.clear();
    let mut item = Some(route.route(message, targets)?);
    let weight = item.as_ref().map_or(0, Weigh::weight);
    let count = targets.len();
    let mut waiting = Vec::new();
    let now = Instant::now();
    for (i, outbox) in targets.drain(..).enumerate() {
        // The last outbox gets the item itself, unless a copy must stay
        // pending for outboxes that refused it.
        let this = if i + 1 == count && waiting.is_empty() {
            item.take()
        } else {
            item.clone()
        };
        let Some(this) = this else {
            break;
        };
        if let Pushed::Full(back) = outbox.push(this) {
            item.get_or_insert(back);
            let progress = outbox.progress();
            waiting.push(Waiting {
                outbox,
                since: now,
                progress,
            });
        }
    }
    if waiting.is_empty() {
        return None;
    }
    Some(Pending {
        item: item?,
        weight,
        waiting,
    })
}

/// A bus message some outboxes refused; while it is pending the intake
/// reads nothing more from the bus.
struct Pending<T> {
    item: T,
    weight: usize,
    /// The outboxes still to be given `item`, in routing order.
    waiting: Vec<Waiting<T>>,
}

struct Waiting<T> {
    outbox: Arc<Outbox<T>>,
    /// When its grace began: the first refusal, or its peer's last progress.
    since: Instant,
    /// Its progress count then.
    progress: u64,
}

impl<T: Weigh + Clone> Pending<T> {
    /// Waits until the first outbox still waiting has room or progress, or
    /// some outbox's grace is over.
    async fn wait(&self, grace: Duration) {
        let Some(first) = self.waiting.first() else {
            return;
        };
        let deadline = self
            .waiting
            .iter()
            .map(|w| w.since + grace)
            .min()
            .unwrap_or_else(Instant::now);
        let _ =
            tokio::time::timeout_at(deadline, first.outbox.room(self.weight, first.progress)).await;
    }

    /// Gives the item to every waiting outbox that takes it now; a peer
    /// past its grace with no progress is marked stalled and takes it by
    /// dropping its oldest. `true` once every outbox has it.
    fn settle(&mut self, grace: Duration) -> bool {
        let now = Instant::now();
        let item = &self.item;
        self.waiting.retain_mut(|w| {
            if !matches!(w.outbox.push(item.clone()), Pushed::Full(_)) {
                return false;
            }
            let progress = w.outbox.progress();
            if progress != w.progress {
                // It took something: its grace starts over.
                w.progress = progress;
                w.since = now;
                return true;
            }
            if now < w.since + grace {
                return true;
            }
            w.outbox.mark_stalled(grace);
            w.outbox.push(item.clone());
            false
        });
        self.waiting.is_empty()
    }
}
