//! What /healthz reports: whether the pipeline reaches its brokers and can go on reading, the
//! cause if not (in words, with what to fix), a part that stopped (which stops the pipeline),
//! and notices that stay for the life of the process (e.g. a gap accepted by configuration).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    /// Why the brokers cannot be reached (cleared once they answer).
    fault: Mutex<Option<String>>,
    /// The Kafka client's own last error (a refused password, an untrusted certificate): the
    /// cause behind a fault, shown with it. Cleared with it.
    client_error: Mutex<Option<String>>,
    /// The brokers answer, but the pipeline cannot go on: a read or a write is refused (a
    /// missing ACL). Cleared by progress: a message read or delivered, or nothing left to read.
    blocked: Mutex<Option<String>>,
    is_blocked: AtomicBool,
    /// A part of the pipeline stopped (see `supervise`): reported until the process exits.
    stopped: Mutex<Option<String>>,
    notices: Mutex<Vec<String>>,
}

fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
    *slot.lock().expect("health lock") = value;
}

fn get(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().expect("health lock").clone()
}

impl Health {
    pub(crate) fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        set(&self.fault, None);
        set(&self.client_error, None);
    }

    pub fn fault(&self, message: String) {
        self.connected.store(false, Ordering::Relaxed);
        set(&self.fault, Some(message));
    }

    pub(crate) fn client_error(&self, message: String) {
        set(&self.client_error, Some(message));
    }

    /// Returns whether the message is new (so the caller logs it once, not at every retry).
    pub(crate) fn blocked(&self, message: String) -> bool {
        self.is_blocked.store(true, Ordering::Relaxed);
        let mut slot = self.blocked.lock().expect("health lock");
        let new = slot.as_deref() != Some(message.as_str());
        *slot = Some(message);
        new
    }

    /// Progress was made; cheap when nothing was blocked (called for every batch).
    pub(crate) fn unblocked(&self) {
        if self.is_blocked.swap(false, Ordering::Relaxed) {
            set(&self.blocked, None);
        }
    }

    pub fn stopped(&self, message: String) {
        set(&self.stopped, Some(message));
    }

    pub fn notice(&self, message: String) {
        self.notices.lock().expect("health lock").push(message);
    }

    pub(crate) fn notices(&self) -> Vec<String> {
        self.notices.lock().expect("health lock").clone()
    }

    /// Ok while the topics are being read; otherwise the cause, in words.
    pub fn status(&self) -> Result<(), String> {
        if let Some(stopped) = get(&self.stopped) {
            return Err(stopped);
        }
        if !self.connected.load(Ordering::Relaxed) {
            let fault = get(&self.fault).unwrap_or_else(|| "starting: not connected to the brokers yet".into());
            return Err(match get(&self.client_error) {
                Some(cause) => format!("{fault}; the Kafka client reports: {cause}"),
                None => fault,
            });
        }
        get(&self.blocked).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_shows_its_cause_until_the_brokers_answer_and_a_block_until_progress() {
        let health = Health::default();
        assert!(health.status().unwrap_err().contains("starting"));
        health.client_error("SASL authentication error: Authentication failed".into());
        health.fault("cannot reach the brokers".into());
        let status = health.status().unwrap_err();
        assert!(
            status.contains("cannot reach the brokers") && status.contains("SASL authentication error"),
            "{status}"
        );
        health.connected();
        assert_eq!(health.status(), Ok(()));
        assert!(health.blocked("not allowed to read t".into()));
        assert!(!health.blocked("not allowed to read t".into()), "the same cause again is not new");
        assert_eq!(health.status(), Err("not allowed to read t".into()));
        health.unblocked();
        assert_eq!(health.status(), Ok(()));
    }
}
