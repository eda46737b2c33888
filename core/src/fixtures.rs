//! Builders of events and states for tests, here and in the pipeline crate: a dossier event
//! with plain defaults (unit U1, procedure P1, direct channel), an empty state at an instant, and
//! a two-unit registry.

use std::sync::Arc;

use crate::event::{status, Channel, DossierEvent};
use crate::state::State;
use crate::time::parse_time;
use crate::units::Registry;

pub fn event(id: &str, dossier: &str, status: u8, time: &str) -> DossierEvent {
    DossierEvent {
        event_id: id.into(),
        event_time: parse_time(time).unwrap(),
        dossier_id: dossier.into(),
        status,
        unit_code: "U1".into(),
        procedure_code: "P1".into(),
        channel: Channel::Direct,
        due_at: None,
        supplement_received: false,
        flags: 0,
    }
}

pub fn reception(id: &str, dossier: &str, time: &str, due: &str) -> DossierEvent {
    DossierEvent { due_at: Some(parse_time(due).unwrap()), ..event(id, dossier, status::RECEIVED, time) }
}

pub fn state_at(t: &str) -> State {
    State::new(parse_time(t).unwrap(), Arc::default())
}

/// A province P (Tỉnh) with one department A (Sở) below it.
pub fn province_and_department() -> Arc<Registry> {
    let registry = Registry::parse(concat!(
        "{\"code\":\"P\",\"name\":\"Tỉnh\",\"level\":\"province\"}\n",
        "{\"code\":\"A\",\"name\":\"Sở\",\"parent\":\"P\",\"level\":\"department\"}\n",
    ));
    Arc::new(registry.expect("the fixture registry parses"))
}
