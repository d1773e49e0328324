//! Bytes carried per directed link `(src, dst)`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters, one per ordered device pair, plus this rank's messages to other ranks.
#[derive(Debug)]
pub(crate) struct LinkCounters {
    n: usize,
    bytes: Vec<AtomicU64>,
    messages_sent: AtomicU64,
    message_bytes_sent: AtomicU64,
    exchange_ns: AtomicU64,
}

/// What this process sent to other ranks (messages and their payload bytes) and the time its
/// collectives spent exchanging them; zero in a one-process mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankTraffic {
    /// Point-to-point messages sent.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Nanoseconds spent in exchanges between ranks: sending, and waiting for the messages of
    /// the other ranks (which includes waiting for a slower rank to reach the step).
    pub exchange_ns: u64,
}

impl RankTraffic {
    /// The traffic since `earlier` (a snapshot of the same mesh).
    pub fn since(&self, earlier: &RankTraffic) -> RankTraffic {
        RankTraffic {
            messages: self.messages.saturating_sub(earlier.messages),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            exchange_ns: self.exchange_ns.saturating_sub(earlier.exchange_ns),
        }
    }

    /// The sum of two counts.
    pub fn plus(&self, other: &RankTraffic) -> RankTraffic {
        RankTraffic {
            messages: self.messages + other.messages,
            bytes: self.bytes + other.bytes,
            exchange_ns: self.exchange_ns + other.exchange_ns,
        }
    }
}

impl LinkCounters {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            bytes: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
            messages_sent: AtomicU64::new(0),
            message_bytes_sent: AtomicU64::new(0),
            exchange_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn add_message(&self, bytes: u64) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.message_bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_exchange_time(&self, elapsed: std::time::Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.exchange_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn traffic(&self) -> RankTraffic {
        RankTraffic {
            messages: self.messages_sent.load(Ordering::Relaxed),
            bytes: self.message_bytes_sent.load(Ordering::Relaxed),
            exchange_ns: self.exchange_ns.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(&self, src: usize, dst: usize, bytes: u64) {
        if let Some(c) = self.bytes.get(src * self.n + dst) {
            c.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> LinkBytes {
        LinkBytes {
            devices: self.n,
            bytes: self
                .bytes
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }

    pub(crate) fn reset(&self) {
        for c in &self.bytes {
            c.store(0, Ordering::Relaxed);
        }
        self.messages_sent.store(0, Ordering::Relaxed);
        self.message_bytes_sent.store(0, Ordering::Relaxed);
        self.exchange_ns.store(0, Ordering::Relaxed);
    }
}

/// A snapshot of bytes sent per directed link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkBytes {
    devices: usize,
    bytes: Vec<u64>,
}

impl LinkBytes {
    /// Devices of the mesh.
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// Bytes sent from `src` to `dst` (0 outside the mesh).
    pub fn get(&self, src: usize, dst: usize) -> u64 {
        if src >= self.devices || dst >= self.devices {
            return 0;
        }
        self.bytes[src * self.devices + dst]
    }

    /// Bytes device `src` sent over all its links.
    pub fn sent_by(&self, src: usize) -> u64 {
        (0..self.devices).map(|dst| self.get(src, dst)).sum()
    }

    /// Bytes sent over all links.
    pub fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }

    /// Links that carried bytes, as `(src, dst, bytes)`.
    pub fn nonzero(&self) -> Vec<(usize, usize, u64)> {
        (0..self.devices)
            .flat_map(|s| (0..self.devices).map(move |d| (s, d)))
            .map(|(s, d)| (s, d, self.get(s, d)))
            .filter(|&(_, _, b)| b > 0)
            .collect()
    }

    /// Bytes sent since `earlier` (a snapshot of the same mesh), link by link.
    pub fn since(&self, earlier: &LinkBytes) -> LinkBytes {
        LinkBytes {
            devices: self.devices,
            bytes: self
                .bytes
                .iter()
                .zip(earlier.bytes.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}
