//! Turns the state's tallies into scores the way the national portal does: numerators and
//! denominators pooled over each unit's subtree, then the pooled ratio converted to points.

use std::collections::{BTreeMap, HashSet};

use crate::state::{State, Tally};
use crate::time::Period;
use crate::units::Registry;

pub struct Criterion {
    pub id: &'static str,
    pub group: u8,
    pub name_vi: &'static str,
    pub name_en: &'static str,
    pub max_points: f64,
}

/// Criterion 2.1, linear: points = max × (completed on time + open and not yet due) ÷ received.
pub const ON_TIME: Criterion = Criterion {
    id: "2.1",
    group: 2,
    name_vi: "Hồ sơ giải quyết trước và đúng hạn",
    name_en: "Dossiers handled early or on time",
    max_points: 20.0,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Position in the registry.
    pub unit: usize,
    pub period: Period,
    /// The period that contains the judging instant (the live one).
    pub current: bool,
    pub numerator: i64,
    pub denominator: i64,
}

impl Score {
    /// None when no dossier was received: there is no ratio, and the criterion gives 0 points.
    pub fn ratio(&self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }

    pub fn points(&self) -> f64 {
        self.ratio().map_or(0.0, |r| ON_TIME.max_points * r)
    }
}

#[derive(Debug, Default)]
pub struct Scoreboard {
    /// Every registered unit × every period that has dossiers or is current; sorted by period,
    /// then registry order (parents first).
    pub scores: Vec<Score>,
    /// Dossiers received under a unit code the registry does not know: kept in the state (not
    /// lost), and scored as soon as the registry lists the unit.
    pub unregistered_dossiers: i64,
}

pub fn score(registry: &Registry, state: &State) -> Scoreboard {
    let now = state.now();
    let current: HashSet<Period> = Period::all_containing(now).into_iter().collect();
    let mut own: BTreeMap<Period, Vec<Tally>> =
        current.iter().map(|&p| (p, vec![Tally::default(); registry.len()])).collect();
    let mut unregistered_dossiers = 0;
    for (&(unit, period), &tally) in state.tallies() {
        match registry.position(state.units.name(unit)) {
            Some(pos) => own.entry(period).or_insert_with(|| vec![Tally::default(); registry.len()])[pos] += tally,
            // Each dossier is in exactly one month: count it there.
            None if period.kind == crate::time::PeriodKind::Month => unregistered_dossiers += tally.received,
            None => {}
        }
    }
    let mut scores = Vec::with_capacity(own.len() * registry.len());
    for (period, tallies) in own {
        for (unit, pooled) in registry.pool_up(&tallies).into_iter().enumerate() {
            scores.push(Score {
                unit,
                period,
                current: current.contains(&period),
                numerator: pooled.on_time,
                denominator: pooled.received,
            });
        }
    }
    Scoreboard { scores, unregistered_dossiers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::status;
    use crate::state::tests::{event, reception};
    use crate::time::parse_time;

    #[test]
    fn parent_pools_dossiers_rather_than_averaging_children() {
        let registry = Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"Province\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"commune\"}\n",
            "{\"code\":\"B\",\"name\":\"B\",\"parent\":\"P\",\"level\":\"commune\"}\n",
        ))
        .unwrap();
        let mut state = State::new(parse_time("2026-11-20T00:00:00+07:00").unwrap());
        // A: 1 dossier, on time. B: 3 dossiers, 1 on time. Average of children would be
        // (1 + 1/3)/2 = 0.667; pooled is 2/4 = 0.5.
        let mut n = 0;
        let mut add = |unit: &str, on_time: bool| {
            n += 1;
            let id = format!("D{n}");
            let mut r = reception(&format!("r{n}"), &id, "2026-11-02T08:00:00+07:00", "2026-11-04T17:00:00+07:00");
            r.unit_code = unit.into();
            let done = if on_time { "2026-11-03T08:00:00+07:00" } else { "2026-11-06T08:00:00+07:00" };
            let mut c = event(&format!("c{n}"), &id, status::COMPLETED, done);
            c.unit_code = unit.into();
            state.apply(&r);
            state.apply(&c);
        };
        add("A", true);
        add("B", true);
        add("B", false);
        add("B", false);
        let mut unknown = reception("x", "DX", "2026-11-02T08:00:00+07:00", "2026-11-04T17:00:00+07:00");
        unknown.unit_code = "Z".into();
        state.apply(&unknown);

        let board = score(&registry, &state);
        assert_eq!(board.unregistered_dossiers, 1);
        let month = |code: &str| {
            let pos = registry.position(code).unwrap();
            board
                .scores
                .iter()
                .find(|s| s.unit == pos && s.current && s.period.kind == crate::time::PeriodKind::Month)
                .unwrap()
                .clone()
        };
        assert_eq!((month("P").numerator, month("P").denominator), (2, 4));
        assert_eq!(month("P").points(), 10.0);
        assert_eq!(month("A").points(), 20.0);
        assert!((month("B").points() - 20.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn empty_denominator_has_no_ratio_and_zero_points() {
        let s = Score {
            unit: 0,
            period: Period::containing(crate::time::PeriodKind::Year, 0),
            current: true,
            numerator: 0,
            denominator: 0,
        };
        assert_eq!((s.ratio(), s.points()), (None, 0.0));
    }
}
