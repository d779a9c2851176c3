//! Acknowledging a channel's deliveries in batches. Deliveries settle out of order (they are
//! delivered concurrently), but AMQP's `multiple` ack covers every outstanding delivery up to a
//! tag. So the window tracks the highest tag below which everything has settled, and acks up to
//! it once per `batch` settlements, or at once when nothing else is in flight (the worker also
//! flushes what is left within 50 ms). Settled messages beyond a slow one are acked one by one
//! before they fill the prefetch. Fewer ack frames mean fewer wake-ups of the AMQP connection's
//! thread, the dispatcher's main CPU cost after HTTP.
//!
//! A crash loses no message: what was not acked yet is redelivered (at-least-once), at most
//! about `2 × batch` settled messages per channel.

use std::collections::BTreeSet;

/// An acknowledgement to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Every outstanding delivery up to and including this tag.
    Through(u64),
    /// Just these deliveries.
    Each(Vec<u64>),
}

/// The settled deliveries of one channel (tags start at 1 and count up).
#[derive(Debug)]
pub struct AckWindow {
    batch: usize,
    /// Every tag up to this one has settled.
    floor: u64,
    /// The floor when the last `Through` was sent.
    sent: u64,
    /// Settled tags above the floor.
    settled: BTreeSet<u64>,
    /// Settled tags that still need an ack (the others were returned to the queue).
    unacked: BTreeSet<u64>,
}

impl AckWindow {
    pub fn new(batch: usize) -> Self {
        Self { batch: batch.max(1), floor: 0, sent: 0, settled: BTreeSet::new(), unacked: BTreeSet::new() }
    }

    /// Records that delivery `tag` has settled, needing an ack or not (a nack was sent for it
    /// already); `idle` says nothing else is in flight. Returns the acks to send now.
    pub fn settle(&mut self, tag: u64, needs_ack: bool, idle: bool) -> Vec<Ack> {
        self.settled.insert(tag);
        if needs_ack {
            self.unacked.insert(tag);
        }
        while self.settled.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        let mut acks = Vec::new();
        if idle || self.floor - self.sent >= self.batch as u64 {
            if let Some(&through) = self.unacked.range(..=self.floor).next_back() {
                acks.push(Ack::Through(through));
                self.unacked = self.unacked.split_off(&(self.floor + 1));
            }
            self.sent = self.floor;
        }
        // Settled beyond a delivery still in flight: ack them one by one before they hold up
        // the prefetch (or, idle, because nothing else will come to cover them).
        if idle || self.unacked.len() >= self.batch {
            let each: Vec<u64> = std::mem::take(&mut self.unacked).into_iter().collect();
            if !each.is_empty() {
                acks.push(Ack::Each(each));
            }
        }
        acks
    }

    /// Acks everything settled that still needs one (before the channel closes).
    pub fn flush(&mut self) -> Vec<Ack> {
        let mut acks = Vec::new();
        if let Some(&through) = self.unacked.range(..=self.floor).next_back() {
            acks.push(Ack::Through(through));
        }
        let each: Vec<u64> = self.unacked.split_off(&(self.floor + 1)).into_iter().collect();
        self.unacked.clear();
        self.sent = self.floor;
        if !each.is_empty() {
            acks.push(Ack::Each(each));
        }
        acks
    }

    /// Settled deliveries not acked yet.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_settlements_are_acked_once_per_batch() {
        let mut w = AckWindow::new(4);
        assert_eq!(w.settle(1, true, false), []);
        assert_eq!(w.settle(2, true, false), []);
        assert_eq!(w.settle(3, true, false), []);
        assert_eq!(w.settle(4, true, false), [Ack::Through(4)]);
        assert_eq!(w.settle(5, true, false), []);
        assert_eq!(w.pending(), 1);
    }

    #[test]
    fn out_of_order_settlements_wait_for_the_gap_to_close() {
        let mut w = AckWindow::new(4);
        for tag in [2, 3, 4] {
            assert_eq!(w.settle(tag, true, false), [], "1 is still in flight");
        }
        assert_eq!(w.settle(1, true, false), [Ack::Through(4)]);
    }

    #[test]
    fn idle_acks_everything_at_once() {
        let mut w = AckWindow::new(16);
        assert_eq!(w.settle(1, true, false), []);
        assert_eq!(w.settle(2, true, true), [Ack::Through(2)]);
        // A gap that will not close soon: the ones beyond it go one by one when idle.
        let mut w = AckWindow::new(16);
        assert_eq!(w.settle(2, true, false), []);
        assert_eq!(w.settle(3, true, true), [Ack::Each(vec![2, 3])]);
        assert_eq!(w.settle(1, true, true), [Ack::Through(1)], "covers only what is still outstanding");
    }

    #[test]
    fn a_slow_delivery_never_holds_the_prefetch_hostage() {
        let mut w = AckWindow::new(4);
        // 1 is slow; 2..=5 settle behind it and are acked one by one at the batch size.
        assert_eq!(w.settle(2, true, false), []);
        assert_eq!(w.settle(3, true, false), []);
        assert_eq!(w.settle(4, true, false), []);
        assert_eq!(w.settle(5, true, false), [Ack::Each(vec![2, 3, 4, 5])]);
        assert_eq!(w.pending(), 0);
        // When 1 settles, the floor jumps to 5; only 1 still needs its ack.
        assert_eq!(w.settle(1, true, false), [Ack::Through(1)]);
    }

    #[test]
    fn nacked_deliveries_count_as_settled_but_are_not_acked() {
        let mut w = AckWindow::new(3);
        assert_eq!(w.settle(1, true, false), []);
        assert_eq!(w.settle(2, false, false), []);
        assert_eq!(w.settle(3, false, false), [Ack::Through(1)], "the highest tag still outstanding");
        let mut w = AckWindow::new(2);
        assert_eq!(w.settle(1, false, false), []);
        assert_eq!(w.settle(2, false, false), [], "nothing outstanding, nothing to send");
    }

    #[test]
    fn flush_acks_what_is_left() {
        let mut w = AckWindow::new(16);
        for tag in [1, 2, 4] {
            w.settle(tag, true, false);
        }
        assert_eq!(w.flush(), [Ack::Through(2), Ack::Each(vec![4])]);
        assert_eq!(w.flush(), []);
    }
}
