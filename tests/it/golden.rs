//! Golden SQL: every `sql/golden/NAME.sql` runs against the scenario's state (no broker: the same
//! events applied directly, judged at the same instant) and must print exactly `NAME.out` beside
//! it. A behaviour change is a reviewable diff: regenerate with `INDEX766_BLESS=1 bash tests/run.sh golden`.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use index766::engine::view::View;
use index766::serve::query::{LiveSources, SqlService};
use index766_core::catalog::Catalog;
use index766_core::petition::{Calendar, Petitions};
use index766_core::spec::Spec;
use index766_core::state::State;
use index766_core::units::Registry;

use crate::scenario;
use crate::support::repo_root;

fn scenario_view() -> View {
    let root = repo_root();
    let config = scenario::config("unused:9092", &std::env::temp_dir());
    let registry = Registry::load(&root.join("schemas/examples/units.jsonl")).unwrap();
    let catalog = Arc::new(Catalog::load(&root.join("schemas/examples/procedures.jsonl")).unwrap());
    let mut state = State::new(config.as_of().unwrap().unwrap(), catalog);
    for event in scenario::events() {
        let bytes = serde_json::to_vec(&event).unwrap();
        state.apply(&index766_core::event::decode(&bytes, None, 65536).unwrap());
    }
    let mut petitions = Petitions::default();
    for line in std::fs::read_to_string(root.join("schemas/examples/petitions.jsonl")).unwrap().lines() {
        let (event, time) = index766_core::petition::decode(line.as_bytes(), None).unwrap();
        petitions.apply(&event, time);
    }
    let calendar = Calendar::new(&config.petitions.holidays).unwrap();
    let tallies = petitions.tallies(&calendar, state.now());
    let spec = Spec::load(&root.join("sql/scoring_spec.toml")).unwrap();
    View::build(Arc::new(registry), &spec, config.scoring.target_total, &state, &tallies)
}

#[tokio::test]
async fn golden_queries_print_their_expected_output() {
    let dir = repo_root().join("sql/golden");
    let config = scenario::config("unused:9092", &std::env::temp_dir());
    let running = prometheus::IntGauge::new("running", "slots").unwrap();
    let service = SqlService::start(&config.sql, LiveSources::fixed(scenario_view()), running).await.unwrap();
    let bless = std::env::var_os("INDEX766_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "golden cases in {}", dir.display());
    let mut failures = Vec::new();
    for case in cases {
        let sql = std::fs::read_to_string(&case).unwrap();
        let printed = match service.collect(&sql, None).await {
            Ok(results) => pretty_format_batches(&results.batches).unwrap().to_string() + "\n",
            Err(e) => format!("ERROR: {e}\n"),
        };
        let expected_path = case.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &printed).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if printed != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{printed}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}\n(INDEX766_BLESS=1 regenerates the .out files)", failures.join("\n"));
}
