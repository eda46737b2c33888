//! What /healthz reports: whether the pipeline is reading its topic, the last fault if not, a part
//! that stopped (which stops the pipeline), and
//! notices that stay for the life of the process (e.g. a gap accepted by configuration).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    fault: Mutex<Option<String>>,
    /// A part of the pipeline stopped (see `supervise`): reported until the process exits.
    stopped: Mutex<Option<String>>,
    notices: Mutex<Vec<String>>,
}

impl Health {
    pub(crate) fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        *self.fault.lock().expect("health lock") = None;
    }

    pub fn fault(&self, message: String) {
        self.connected.store(false, Ordering::Relaxed);
        *self.fault.lock().expect("health lock") = Some(message);
    }

    pub fn stopped(&self, message: String) {
        *self.stopped.lock().expect("health lock") = Some(message);
    }

    pub fn notice(&self, message: String) {
        self.notices.lock().expect("health lock").push(message);
    }

    pub(crate) fn notices(&self) -> Vec<String> {
        self.notices.lock().expect("health lock").clone()
    }

    /// Ok while the topic is being read; otherwise the fault, in words.
    pub fn status(&self) -> Result<(), String> {
        if let Some(stopped) = self.stopped.lock().expect("health lock").clone() {
            return Err(stopped);
        }
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
