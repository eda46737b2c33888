//! What /healthz reports: whether the pipeline is reading its topic, and the last fault if not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    fault: Mutex<Option<String>>,
}

impl Health {
    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        *self.fault.lock().expect("health lock") = None;
    }

    pub fn fault(&self, message: String) {
        self.connected.store(false, Ordering::Relaxed);
        *self.fault.lock().expect("health lock") = Some(message);
    }

    /// Ok while the topic is being read; otherwise the fault, in words.
    pub fn status(&self) -> Result<(), String> {
        if self.connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self
            .fault
            .lock()
            .expect("health lock")
            .clone()
            .unwrap_or_else(|| "starting: not connected to the brokers yet".into()))
    }
}
