//! What one dossier contributes to the dossier criteria (their judging functions are in
//! [`crate::criteria::CRITERIA`]): the state sums these per unit and period; the dossiers table
//! shows them per dossier.

use std::ops::AddAssign;

use crate::catalog::Procedure;
use crate::criteria::{index_of, slot, Figure, JudgeDossier, Judged, DOSSIER_JUDGES, DOSSIER_SLOTS};
use crate::dossier::Dossier;

/// Numerator and denominator of one criterion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ratio {
    pub num: i64,
    pub den: i64,
}

/// Numerators and denominators of every dossier criterion, for one unit's own dossiers and a
/// period, slot by slot ([`crate::criteria::Criterion::slot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally(pub [Ratio; DOSSIER_SLOTS]);

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            a.num += b.num;
            a.den += b.den;
        }
    }
}

impl Tally {
    pub fn scaled(mut self, sign: i64) -> Tally {
        for r in &mut self.0 {
            r.num *= sign;
            r.den *= sign;
        }
        self
    }

    /// The ratio of a dossier criterion.
    pub fn of(&self, id: &str) -> Ratio {
        self.0[slot(index_of(id)).unwrap_or_else(|| panic!("{id} is not a dossier criterion"))]
    }

    /// The dossiers received (2.1 counts every one).
    pub fn dossiers(&self) -> i64 {
        const RECEIVED: usize = match slot(index_of("2.1")) {
            Some(slot) => slot,
            None => panic!("2.1 is a dossier criterion"),
        };
        self.0[RECEIVED].den
    }
}

/// The dossier's tally for a period: 1 in each denominator it counts in, and what each
/// criterion's judgement adds to its numerator.
pub fn tally(d: &Dossier, on_time: bool, procedure: Option<&Procedure>) -> Tally {
    let judged = Judged { dossier: d, on_time, procedure };
    let mut tally = Tally::default();
    for (ratio, (judge, _, _)) in tally.0.iter_mut().zip(DOSSIER_JUDGES) {
        if let Some(num) = judge(&judged) {
            *ratio = Ratio { num, den: 1 };
        }
    }
    tally
}

/// The dossier criteria that are ratios (not means), as the dossiers table marks them: each
/// one's id and judging function.
pub fn marked() -> impl Iterator<Item = (&'static str, JudgeDossier)> {
    DOSSIER_JUDGES.into_iter().filter(|(_, figure, _)| *figure != Figure::MeanDays).map(|(judge, _, id)| (id, judge))
}
