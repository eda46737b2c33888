//! The declarative scoring spec (`sql/scoring_spec.toml`): per criterion its points, conversion,
//! empty-denominator rule, where it applies and from when. Loaded at start; a changed file changes
//! the scores after a restart, with no rebuild.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::criteria::{Applies, Criterion, Figure, Source, CRITERIA};
use crate::time::{local_date, Period};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the scoring spec {path}: {source} (set [scoring] spec_file)")]
    Read { path: String, source: std::io::Error },
    #[error("scoring spec: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    Linear,
    Threshold,
    Shown,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenEmpty {
    Zero,
    Full,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: u8,
    pub name_vi: String,
    pub name_en: String,
    pub max_points: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionSpec {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    pub max_points: f64,
    pub conversion: Conversion,
    #[serde(default)]
    pub threshold: Option<f64>,
    pub when_empty: WhenEmpty,
    pub applies: Applies,
    #[serde(deserialize_with = "date")]
    pub in_force_from: NaiveDate,
    /// Index in [`CRITERIA`], filled at load.
    #[serde(skip)]
    pub index: usize,
}

impl CriterionSpec {
    /// What this build knows of the criterion.
    pub fn criterion(&self) -> &'static Criterion {
        &CRITERIA[self.index]
    }

    /// The group is the part of the id before the dot.
    pub fn group(&self) -> u8 {
        self.id.split('.').next().and_then(|g| g.parse().ok()).expect("ids are checked at load")
    }

    /// Points for a ratio (None: empty denominator).
    pub fn points(&self, ratio: Option<f64>) -> f64 {
        match (self.conversion, ratio, self.when_empty) {
            (Conversion::Shown, _, _) => 0.0,
            (Conversion::Full, _, _) => self.max_points,
            (_, None, WhenEmpty::Zero) => 0.0,
            (_, None, WhenEmpty::Full) => self.max_points,
            (Conversion::Linear, Some(r), _) => self.max_points * r,
            (Conversion::Threshold, Some(r), _) => {
                self.max_points * (r / self.threshold.expect("checked at load")).min(1.0)
            }
        }
    }

    /// The ratio at which the criterion earns full points.
    pub fn full_points_ratio(&self) -> f64 {
        match self.conversion {
            Conversion::Threshold => self.threshold.expect("checked at load"),
            _ => 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub name: String,
    pub min: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub version: String,
    pub bands: Vec<Band>,
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    #[serde(rename = "criterion")]
    pub criteria: Vec<CriterionSpec>,
}

/// The spec this build ships (`sql/scoring_spec.toml`): used when the config names no spec file.
pub const SHIPPED: &str = include_str!("../../sql/scoring_spec.toml");

impl Spec {
    /// The shipped spec, parsed (its tests prove it parses).
    pub fn shipped() -> Spec {
        Spec::parse(SHIPPED).expect("the shipped spec is valid")
    }

    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SpecError::Read { path: path.display().to_string(), source })?;
        Spec::parse(&text).map_err(|e| match e {
            SpecError::Invalid(m) => SpecError::Invalid(format!("{}, {m}", path.display())),
            read => read,
        })
    }

    /// Parses a spec and checks it against the criteria this build counts ([`CRITERIA`]); an
    /// error names the line to fix.
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let mut spec: Spec = parse_toml(text)?;
        let at = |table: &str, entry: usize, key: &str, message: String| {
            SpecError::Invalid(match line_of(text, table, entry, key) {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        };
        for (k, c) in spec.criteria.iter_mut().enumerate() {
            c.index = CRITERIA.iter().position(|known| known.id == c.id).ok_or_else(|| {
                let known: Vec<&str> = CRITERIA.iter().map(|c| c.id).collect();
                at(
                    "criterion",
                    k,
                    "id",
                    format!("criterion {:?} is not one this build counts ({})", c.id, known.join(", ")),
                )
            })?;
            if c.conversion == Conversion::Threshold && !c.threshold.is_some_and(|t| t > 0.0 && t <= 1.0) {
                let message = format!("criterion {}: conversion \"threshold\" needs threshold in (0, 1]", c.id);
                return Err(at("criterion", k, "conversion", message));
            }
            let known = c.criterion();
            if known.figure == Figure::MeanDays && c.conversion != Conversion::Shown {
                let message = format!("criterion {} is a mean in days, not a ratio: set conversion = \"shown\"", c.id);
                return Err(at("criterion", k, "conversion", message));
            }
            if c.applies != known.applies() {
                let message = format!(
                    "criterion {} is {}: set applies = \"{}\"",
                    c.id,
                    counted_from(known.source),
                    known.applies().as_str()
                );
                return Err(at("criterion", k, "applies", message));
            }
        }
        for (k, c) in spec.criteria.iter().enumerate() {
            if !spec.groups.iter().any(|g| g.id == c.group()) {
                let message = format!("criterion {} belongs to group {}, which is not defined", c.id, c.group());
                return Err(at("criterion", k, "id", message));
            }
            if spec.criteria[..k].iter().any(|o| o.id == c.id && o.in_force_from == c.in_force_from) {
                let message = format!("criterion {} has two entries in force from {}", c.id, c.in_force_from);
                return Err(at("criterion", k, "in_force_from", message));
            }
        }
        if let Some(missing) = CRITERIA.iter().find(|known| spec.criteria.iter().all(|c| c.id != known.id)) {
            return Err(SpecError::Invalid(format!(
                "criterion {} is missing: add a [[criterion]] entry with id = \"{}\"",
                missing.id, missing.id
            )));
        }
        // Every version in force must add up: criteria to their group's maximum.
        let mut dates: Vec<NaiveDate> = spec.criteria.iter().map(|c| c.in_force_from).collect();
        dates.sort();
        dates.dedup();
        for date in dates {
            let in_force = spec.in_force_on(date);
            for (k, g) in spec.groups.iter().enumerate() {
                let sum: f64 = in_force.iter().filter(|c| c.group() == g.id).map(|c| c.max_points).sum();
                if (sum - g.max_points).abs() > 1e-9 {
                    let message = format!(
                        "from {date}, group {}'s criteria add up to {sum} points, but the group is worth {}",
                        g.id, g.max_points
                    );
                    return Err(at("group", k, "max_points", message));
                }
            }
        }
        spec.bands.sort_by(|a, b| b.min.total_cmp(&a.min));
        Ok(spec)
    }

    fn in_force_on(&self, date: NaiveDate) -> Vec<&CriterionSpec> {
        let mut latest: BTreeMap<usize, &CriterionSpec> = BTreeMap::new();
        for c in self.criteria.iter().filter(|c| c.in_force_from <= date) {
            if latest.get(&c.index).is_none_or(|old| old.in_force_from < c.in_force_from) {
                latest.insert(c.index, c);
            }
        }
        latest.into_values().collect()
    }

    /// The entry of each criterion in force for `period` (decided on its first day; before the
    /// earliest entry, the earliest applies), in [`CRITERIA`] order.
    pub fn for_period(&self, period: Period) -> Vec<&CriterionSpec> {
        let first_day = local_date(period.start());
        CRITERIA
            .iter()
            .map(|known| {
                let entries = self.criteria.iter().filter(|c| c.id == known.id);
                entries
                    .clone()
                    .filter(|c| c.in_force_from <= first_day)
                    .max_by_key(|c| c.in_force_from)
                    .or_else(|| entries.min_by_key(|c| c.in_force_from))
                    .expect("every criterion is checked present")
            })
            .collect()
    }

    pub fn group(&self, id: u8) -> &Group {
        self.groups.iter().find(|g| g.id == id).expect("groups are checked")
    }

    pub fn band(&self, total: f64) -> &str {
        self.bands.iter().find(|b| total >= b.min).map_or("", |b| b.name.as_str())
    }
}

/// What a criterion is counted from, as a spec error explains it.
fn counted_from(source: Source) -> &'static str {
    match source {
        Source::Dossier(_) => "counted dossier by dossier, pooled over each unit's subtree",
        Source::Procedures { .. } | Source::ProceduresSeen { .. } => {
            "counted over the procedures of each unit's subtree"
        }
        Source::Catalog(_) => "judged once from the root's catalog and shown on every unit",
        Source::Communes => "counted over the root's communes and shown on every unit",
        Source::Petitions(_) => "counted from petitions, pooled over each unit's subtree",
    }
}

/// The line (from 1) of `key` in the `entry`-th `[[table]]` of a spec's text; of the table's
/// header if the key is not written there; None if the table is not written as `[[table]]`.
fn line_of(text: &str, table: &str, entry: usize, key: &str) -> Option<usize> {
    let header = format!("[[{table}]]");
    let (mut seen, mut inside, mut found) = (0, false, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            if inside {
                break;
            }
            if line == header {
                inside = seen == entry;
                found = found.or(inside.then_some(n + 1));
                seen += 1;
            }
        } else if inside && line.split('=').next().is_some_and(|k| k.trim() == key) {
            return Some(n + 1);
        }
    }
    found
}

/// A `YYYY-MM-DD` date (chrono's serde support is not compiled in).
fn date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let text = String::deserialize(d)?;
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| serde::de::Error::custom(format!("in_force_from {text:?} is not a YYYY-MM-DD date: {e}")))
}

fn parse_toml(text: &str) -> Result<Spec, SpecError> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text)).extract().map_err(|e| SpecError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_adds_up_to_100_in_six_groups() {
        let spec = Spec::shipped();
        let nov = Period::containing(
            crate::time::PeriodKind::Month,
            crate::time::parse_time("2026-11-03T00:00:00Z").unwrap(),
        );
        let in_force = spec.for_period(nov);
        assert_eq!(in_force.len(), 23);
        assert_eq!(in_force.iter().map(|c| c.max_points).sum::<f64>(), 100.0);
        assert_eq!(in_force.iter().filter(|c| c.conversion == Conversion::Shown).count(), 2);
        assert_eq!(spec.groups.len(), 6);
        assert_eq!((spec.band(91.0), spec.band(74.9), spec.band(10.0)), ("excellent", "fair", "weak"));
    }

    #[test]
    fn conversions() {
        let spec = Spec::shipped();
        let c = |id: &str| spec.criteria.iter().find(|c| c.id == id).unwrap().clone();
        assert_eq!(c("2.1").points(Some(0.5)), 10.0);
        assert_eq!(c("3.3").points(Some(0.25)), 3.0, "threshold 0.5: half way");
        assert_eq!(c("3.3").points(Some(0.7)), 6.0, "above the threshold: full");
        assert_eq!(c("2.1").points(None), 0.0);
        assert_eq!(c("6.2").points(None), 6.0, "no petitions: full points");
        assert_eq!(c("5.3").points(Some(0.25)), 0.5, "5.3: linear on the communes offering copies");
        assert_eq!(c("5.3").points(None), 2.0, "no communes (a ministry): full points");
        assert_eq!(c("2.2").points(Some(3.0)), 0.0);
    }

    #[test]
    fn a_later_entry_replaces_the_earlier_from_its_date() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/scoring_spec.toml")).unwrap()
            + "\n[[criterion]]\nid = \"5.2\"\nname_vi = \"x\"\nname_en = \"x\"\nmax_points = 4\nconversion = \"threshold\"\nthreshold = 0.8\nwhen_empty = \"zero\"\napplies = \"every_unit\"\nin_force_from = \"2026-07-01\"\n";
        let spec = Spec::parse(&text).unwrap();
        let at = |t: &str| {
            let p = Period::containing(crate::time::PeriodKind::Month, crate::time::parse_time(t).unwrap());
            spec.for_period(p).into_iter().find(|c| c.id == "5.2").unwrap().conversion
        };
        assert_eq!(at("2026-06-15T00:00:00+07:00"), Conversion::Linear);
        assert_eq!(at("2026-07-01T00:00:00+07:00"), Conversion::Threshold);
    }

    #[test]
    fn broken_specs_say_what_is_wrong() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/scoring_spec.toml")).unwrap();
        let err = Spec::parse(&text.replace("max_points = 20\nconversion", "max_points = 19\nconversion")).unwrap_err();
        assert!(err.to_string().contains("group 2"), "{err}");
        let err = Spec::parse(&text.replace("id = \"6.4\"", "id = \"6.9\"")).unwrap_err();
        assert!(err.to_string().contains("6.9"), "{err}");
        let err = Spec::parse(&text.replace("threshold = 0.9\n", "")).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        // A dossier criterion applied at the root would show the root's figure on every unit.
        let first_every_unit = text.lines().position(|l| l == "applies = \"every_unit\"").unwrap() + 1;
        let err = Spec::parse(&text.replacen("applies = \"every_unit\"", "applies = \"root\"", 1)).unwrap_err();
        let expected = format!("line {first_every_unit}: criterion 1.4 is counted dossier by dossier");
        assert!(
            err.to_string().contains(&expected) && err.to_string().contains("set applies = \"every_unit\""),
            "{err}"
        );
        let err = Spec::parse(&text.replacen("applies = \"root\"", "applies = \"every_unit\"", 1)).unwrap_err();
        assert!(err.to_string().contains("criterion 1.1 is judged once from the root's catalog"), "{err}");
        let err = Spec::parse(&text.replacen("conversion = \"shown\"", "conversion = \"linear\"", 1)).unwrap_err();
        assert!(err.to_string().contains("criterion 2.2 is a mean in days"), "{err}");
    }
}
