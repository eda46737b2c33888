//! The shipped schemas and examples agree with the decoders: what the schema accepts decodes,
//! and what it refuses is refused.

use index766_core::event::decode;
use serde_json::{json, Value};

use crate::repo_root;

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join("schemas").join(name)).unwrap();
    jsonschema::validator_for(&serde_json::from_str::<Value>(&text).unwrap()).unwrap()
}

fn lines(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("schemas/examples").join(name)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn example_events_are_valid_and_decode() {
    let validator = schema("dossier-event.v1.schema.json");
    let examples = lines("dossier-events.jsonl");
    assert!(examples.len() >= 10);
    for e in &examples {
        assert!(validator.is_valid(e), "{e}");
        decode(e.to_string().as_bytes(), Some(e["dossier_id"].as_str().unwrap().as_bytes()), 65536).unwrap();
    }
}

#[test]
fn schema_and_decoder_refuse_the_same_bad_events() {
    let validator = schema("dossier-event.v1.schema.json");
    let good = lines("dossier-events.jsonl")[1].clone();
    type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);
    let mutations: Vec<Mutation> = vec![
        ("status 0", Box::new(|v| v["status"] = json!(0))),
        ("channel 9", Box::new(|v| v["channel"] = json!(9))),
        ("no offset on event_time", Box::new(|v| v["event_time"] = json!("2026-11-03T08:15:00"))),
        ("unknown field", Box::new(|v| v["colour"] = json!("red"))),
        (
            "no dossier id",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("dossier_id");
            }),
        ),
        ("empty unit code", Box::new(|v| v["unit_code"] = json!(""))),
        ("version 2", Box::new(|v| v["schema_version"] = json!(2))),
        ("paid_online 3", Box::new(|v| v["fees"] = json!([{"amount": 1000, "paid_online": 3}]))),
        ("negative fee", Box::new(|v| v["fees"] = json!([{"amount": -5}]))),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!validator.is_valid(&bad), "schema accepts {what}");
        assert!(decode(bad.to_string().as_bytes(), None, 65536).is_err(), "decoder accepts {what}");
    }
}

#[test]
fn example_units_are_valid_and_form_a_tree() {
    let validator = schema("unit.v1.schema.json");
    for u in lines("units.jsonl") {
        assert!(validator.is_valid(&u), "{u}");
    }
    index766_core::units::Registry::load(&repo_root().join("schemas/examples/units.jsonl")).unwrap();
}

#[test]
fn example_procedures_and_petitions_are_valid_and_decode() {
    let procedures = schema("procedure.v1.schema.json");
    for p in lines("procedures.jsonl") {
        assert!(procedures.is_valid(&p), "{p}");
    }
    let catalog =
        index766_core::catalog::Catalog::load(&repo_root().join("schemas/examples/procedures.jsonl")).unwrap();
    assert_eq!(catalog.len(), 4);
    let petitions = schema("petition-event.v1.schema.json");
    for p in lines("petitions.jsonl") {
        assert!(petitions.is_valid(&p), "{p}");
        index766_core::petition::decode(p.to_string().as_bytes(), Some(p["petition_id"].as_str().unwrap().as_bytes()))
            .unwrap();
    }
    let mut bad = lines("petitions.jsonl")[0].clone();
    bad["step"] = json!("escalated");
    assert!(!petitions.is_valid(&bad));
    assert!(index766_core::petition::decode(bad.to_string().as_bytes(), None).is_err());
}
