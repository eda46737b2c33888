//! Where the pipeline stands in its inputs: the next offset of every partition, and the counts
//! that move with those offsets batch by batch (so a restart counts every message once).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Next offset to read, per (topic, partition).
pub(crate) type Offsets = BTreeMap<(String, i32), i64>;

/// Counts that must survive a restart exactly: they move with the offsets, batch by batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Messages read past the snapshot positions, every topic.
    pub consumed: u64,
    /// Events that changed the state.
    pub applied: u64,
    /// Messages sent to the dead-letter topic, by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_owned()).or_default() += 1;
    }

    pub(crate) fn add(&mut self, other: &Ledger) {
        self.consumed += other.consumed;
        self.applied += other.applied;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
    }
}
