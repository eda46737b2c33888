//! The simulator speaks the event contract: its units, catalog and events pass the core's
//! decoders, which the core's own contract tests hold against the shipped JSON schemas.

use index766_core::catalog::Catalog;
use index766_core::event::decode;
use index766_core::time::parse_time;
use index766_core::units::Registry;

#[test]
fn simulated_events_and_units_follow_the_contract() {
    let mut sim = index766::tools::demo::simulator(1);
    let registry = Registry::parse(&sim.province().registry_jsonl()).unwrap();
    assert!(registry.units().len() > 10);
    let now = parse_time("2026-11-24T12:00:00+07:00").unwrap();
    let events = sim.history(now, 3, 50);
    assert!(!events.is_empty());
    for e in events {
        let wire = serde_json::to_string(&e).unwrap();
        decode(wire.as_bytes(), Some(e.dossier_id.as_bytes()), 65536).unwrap_or_else(|r| panic!("{wire}: {r:?}"));
    }
}

#[test]
fn the_simulated_catalog_follows_the_contract() {
    let sim = index766::tools::demo::simulator(1);
    let now = parse_time("2026-11-24T12:00:00+07:00").unwrap();
    assert_eq!(Catalog::parse(&sim.province().catalog_jsonl(now)).unwrap().len(), 40);
}
