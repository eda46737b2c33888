//! The procedure catalog (`schemas/procedure.v1.schema.json`): what each procedure is, as the
//! criteria need it. Loaded from a JSON-lines file; optional (without it, catalog criteria have
//! empty denominators and dossiers without a due date cannot be late).

use hashbrown::HashMap; // foldhash: looked up by code for every event
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::time::{parse_time, Instant};
use crate::units::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineLevel {
    None,
    Partial,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applicant {
    Citizen,
    Business,
    Organisation,
}

/// One procedure as written in the file (times as RFC 3339 text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureRecord {
    pub code: String,
    pub name: String,
    pub online_level: OnlineLevel,
    #[serde(default)]
    pub eligible_full_online: bool,
    #[serde(default)]
    pub fee: u64,
    #[serde(default)]
    pub needs_written_result: bool,
    pub applicant_types: Vec<Applicant>,
    pub max_processing_days: Option<u32>,
    pub levels: Vec<Level>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_issued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_due_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_public_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_due_at: Option<String>,
    #[serde(default)]
    pub record_complete: bool,
}

/// A procedure with its times parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    pub code: String,
    pub online: bool,
    pub has_fee: bool,
    pub needs_written_result: bool,
    pub for_citizens: bool,
    pub max_processing_days: Option<u32>,
    pub levels: Vec<Level>,
    /// The units that implement it; empty: every unit at one of `levels`.
    pub units: Vec<String>,
    pub decision_issued_at: Option<Instant>,
    pub decision_due_at: Option<Instant>,
    pub made_public_at: Option<Instant>,
    pub public_due_at: Option<Instant>,
    pub record_complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the procedure catalog {path}: {source} (set [catalog] file, or leave it empty)")]
    Read { path: String, source: std::io::Error },
    #[error("procedure catalog line {line}: {detail}")]
    Line { line: usize, detail: String },
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    procedures: HashMap<String, Procedure>,
}

fn time(field: &str, text: &Option<String>) -> Result<Option<Instant>, String> {
    text.as_deref()
        .map(|t| parse_time(t).map_err(|e| format!("{field} {t:?} is not RFC 3339 with offset: {e}")))
        .transpose()
}

impl Procedure {
    pub fn from_record(r: &ProcedureRecord) -> Result<Procedure, String> {
        if r.code.is_empty() {
            return Err("code is empty".into());
        }
        Ok(Procedure {
            code: r.code.clone(),
            online: r.online_level != OnlineLevel::None,
            has_fee: r.fee > 0,
            needs_written_result: r.needs_written_result,
            for_citizens: r.applicant_types.contains(&Applicant::Citizen),
            max_processing_days: r.max_processing_days,
            levels: r.levels.clone(),
            units: r.units.clone(),
            decision_issued_at: time("decision_issued_at", &r.decision_issued_at)?,
            decision_due_at: time("decision_due_at", &r.decision_due_at)?,
            made_public_at: time("made_public_at", &r.made_public_at)?,
            public_due_at: time("public_due_at", &r.public_due_at)?,
            record_complete: r.record_complete,
        })
    }
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CatalogError::Read { path: path.display().to_string(), source })?;
        Catalog::parse(&text)
    }

    pub fn parse(jsonl: &str) -> Result<Catalog, CatalogError> {
        let mut procedures = HashMap::new();
        for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let error = |detail: String| CatalogError::Line { line: i + 1, detail };
            let record: ProcedureRecord = serde_json::from_str(line).map_err(|e| error(e.to_string()))?;
            let procedure = Procedure::from_record(&record).map_err(error)?;
            if procedures.insert(procedure.code.clone(), procedure).is_some() {
                return Err(error(format!("procedure {} is listed twice", record.code)));
            }
        }
        Ok(Catalog { procedures })
    }

    /// Adds, replaces (Some) or removes (None) a procedure.
    pub fn set(&mut self, code: String, procedure: Option<Procedure>) {
        match procedure {
            Some(p) => self.procedures.insert(code, p),
            None => self.procedures.remove(&code),
        };
    }

    pub fn get(&self, code: &str) -> Option<&Procedure> {
        self.procedures.get(code)
    }

    pub fn procedures(&self) -> impl Iterator<Item = &Procedure> {
        self.procedures.values()
    }

    pub fn len(&self) -> usize {
        self.procedures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procedures.is_empty()
    }
}
