//! What one dossier contributes to each dossier-based criterion (domain reference §5-§6). The
//! state sums these per unit and period; the dossiers table shows them per dossier.

use std::ops::AddAssign;

use crate::catalog::Procedure;
use crate::dossier::Dossier;
use crate::event::{flag, Channel};

/// The criteria counted dossier by dossier, in this order in a [`Tally`].
pub const DOSSIER_CRITERIA: [&str; 11] = ["1.4", "2.1", "2.2", "3.3", "4.3", "5.1", "5.2", "5.4", "5.5", "5.6", "6.4"];
pub const SYNCED: usize = 0;
pub const ON_TIME: usize = 1;
pub const PROCESSING_TIME: usize = 2;
pub const ONLINE: usize = 3;

/// Numerator and denominator of one criterion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ratio {
    pub num: i64,
    pub den: i64,
}

/// Numerators and denominators of every dossier criterion, for one unit's own dossiers and a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally(pub [Ratio; DOSSIER_CRITERIA.len()]);

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
}

/// Per dossier criterion: None when the dossier is not counted, else whether it counts as good.
pub type Marks = [Option<bool>; DOSSIER_CRITERIA.len()];

/// `on_time` is the 2.1 judgement for the period in question.
pub fn marks(d: &Dossier, on_time: bool, procedure: Option<&Procedure>) -> Marks {
    let has = |bit: u16| d.flags & bit != 0;
    let needs_result = procedure.is_some_and(|p| p.needs_written_result);
    let electronic = has(flag::ELECTRONIC_RESULT);
    let has_result = d.completed_at().is_some() || d.returned_at().is_some();
    [
        Some(has(flag::SYNCED_TO_PORTAL)),
        Some(on_time),
        d.completed_at().map(|_| true),
        Some(d.channel == Channel::Online && (!needs_result || electronic)),
        has(flag::HAS_FEE).then_some(has(flag::PAID_ONLINE)),
        (needs_result && has_result).then_some(electronic),
        Some(has(flag::DIGITISED) && (!needs_result || electronic)),
        Some(has(flag::REUSED_DATA)),
        Some(has(flag::PERSONAL_STORE)),
        Some(has(flag::VNEID) || has(flag::POPULATION_DATA)),
        Some(on_time && !has(flag::DISLIKED) && !has(flag::COMPLAINED)),
    ]
}

/// The dossier's tally for a period: 1 in each denominator it counts in, 1 in each numerator it
/// is good for; 2.2 adds its processing time in seconds to the numerator instead.
pub fn tally(d: &Dossier, on_time: bool, procedure: Option<&Procedure>) -> Tally {
    let mut tally = Tally::default();
    for (ratio, mark) in tally.0.iter_mut().zip(marks(d, on_time, procedure)) {
        if let Some(good) = mark {
            ratio.den = 1;
            ratio.num = good as i64;
        }
    }
    if let (Some(received), Some(completed)) = (d.received_at(), d.completed_at()) {
        tally.0[PROCESSING_TIME].num = (completed - received).max(0);
    }
    tally
}

/// Facts counted per procedure, for the criteria over procedures (3.2, 4.1, 4.2, 5.7).
pub const ONLINE_DOSSIER: usize = 0;
pub const FEE_DATA: usize = 1;
pub const PAID_ONLINE: usize = 2;
pub const POPULATION_DATA: usize = 3;
pub type Facts = [i64; 4];

pub fn procedure_facts(d: &Dossier) -> Facts {
    let has = |bit: u16| (d.flags & bit != 0) as i64;
    [
        (d.channel == Channel::Online) as i64,
        has(flag::HAS_FEE),
        has(flag::PAID_ONLINE),
        has(flag::VNEID).max(has(flag::POPULATION_DATA)),
    ]
}
