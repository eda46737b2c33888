//! The criteria this build counts, each declared once (domain reference §5): where its figure
//! comes from, how the figure is derived, and where the spec may apply it. Scoring, the spec's
//! check at load, the views and the `dossiers` table all read [`CRITERIA`]; adding a criterion is
//! one entry here, with its judging function, and its entry in the spec.

use serde::Deserialize;

use crate::catalog::Procedure;
use crate::dossier::Dossier;
use crate::event::{flag, Channel};
use crate::time::{Instant, Period};

pub struct Criterion {
    pub id: &'static str,
    pub source: Source,
    pub figure: Figure,
}

#[derive(Clone, Copy)]
pub enum Source {
    /// Judged dossier by dossier: what one dossier adds to the numerator (it adds 1 to the
    /// denominator), None when it is not counted. Pooled over each unit's subtree.
    Dossier(JudgeDossier),
    /// The catalog's procedures under the unit's authority that `applies`; good when a dossier
    /// of the unit's subtree showed `fact`.
    Procedures { applies: fn(&Procedure) -> bool, fact: Fact },
    /// The procedures whose dossiers in the unit's subtree showed `counted`; good when one of
    /// them showed `good`.
    ProceduresSeen { counted: Fact, good: Fact },
    /// The catalog of the root (province or ministry), judged once there and shown unchanged on
    /// every unit of its tree: None when the procedure is not counted, else whether it is good.
    Catalog(fn(&Procedure, &CatalogClock) -> Option<bool>),
    /// The communes of the root's tree that offer certified copies (unit registry).
    Communes,
    /// One of the petition tallies ([`crate::petition::Petitions::tallies`]).
    Petitions(usize),
}

/// How the figure is derived from numerator and denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Ratio,
    /// The ratio times another criterion's ratio (3.3: the online share × the 1.4 sync ratio).
    RatioTimes(&'static str),
    /// The numerator is in seconds: the mean in days (2.2). Shown only.
    MeanDays,
}

/// Where a criterion is computed: over each unit's subtree, or once at the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    EveryUnit,
    Root,
}

impl Applies {
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::EveryUnit => "every_unit",
            Applies::Root => "root",
        }
    }
}

impl Criterion {
    /// The only `applies` that makes sense for the source: the catalog and the registry are
    /// judged at the root; everything counted from dossiers and petitions pools over subtrees.
    pub fn applies(&self) -> Applies {
        match self.source {
            Source::Catalog(_) | Source::Communes => Applies::Root,
            _ => Applies::EveryUnit,
        }
    }
}

/// The position in [`CRITERIA`] of the criterion `id` (a compile-time error in a constant when
/// there is none).
pub const fn index_of(id: &str) -> usize {
    let mut i = 0;
    while i < CRITERIA.len() {
        if same(CRITERIA[i].id, id) {
            return i;
        }
        i += 1;
    }
    panic!("not a criterion of the table")
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The position among the dossier criteria (in a [`crate::judge::Tally`]) of the criterion at
/// `index` in [`CRITERIA`], if it is one.
pub const fn slot(index: usize) -> Option<usize> {
    SLOTS[index]
}

/// A dossier criterion's judging function.
pub type JudgeDossier = fn(&Judged) -> Option<i64>;

/// A dossier as the dossier criteria judge it.
pub struct Judged<'a> {
    pub dossier: &'a Dossier,
    /// The 2.1 judgement for the period in question.
    pub on_time: bool,
    pub procedure: Option<&'a Procedure>,
}

impl Judged<'_> {
    fn has(&self, bit: u16) -> bool {
        self.dossier.flags & bit != 0
    }

    fn needs_written_result(&self) -> bool {
        self.procedure.is_some_and(|p| p.needs_written_result)
    }

    /// A paper result where the procedure needs a written one spoils an otherwise good dossier.
    fn result_fits(&self) -> bool {
        !self.needs_written_result() || self.has(flag::ELECTRONIC_RESULT)
    }
}

/// Counted; 1 in the numerator when good.
fn counted(good: bool) -> Option<i64> {
    Some(good as i64)
}

/// The instants a catalog criterion is judged against.
pub struct CatalogClock {
    pub period: Period,
    pub now: Instant,
}

impl CatalogClock {
    fn within(&self, t: Option<Instant>) -> bool {
        t.is_some_and(|t| self.period.start() <= t && t < self.period.end())
    }
}

/// Facts counted per procedure (for [`Source::Procedures`] and [`Source::ProceduresSeen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    OnlineDossier,
    /// Fee data synced to the portal (4.1).
    FeeData,
    /// Fee data synced or paid online: a dossier with a fee (4.2's procedures).
    FeeBearing,
    PaidOnline,
    PopulationData,
}

/// How many of a procedure's dossiers showed each [`Fact`], in declaration order.
pub type Facts = [i64; 5];

impl Fact {
    pub fn of(self, facts: &Facts) -> i64 {
        facts[self as usize]
    }
}

pub fn procedure_facts(d: &Dossier) -> Facts {
    let has = |bit: u16| (d.flags & bit != 0) as i64;
    let mut facts = Facts::default();
    facts[Fact::OnlineDossier as usize] = (d.channel == Channel::Online) as i64;
    facts[Fact::FeeData as usize] = has(flag::HAS_FEE);
    facts[Fact::FeeBearing as usize] = has(flag::HAS_FEE).max(has(flag::PAID_ONLINE));
    facts[Fact::PaidOnline as usize] = has(flag::PAID_ONLINE);
    facts[Fact::PopulationData as usize] = has(flag::VNEID).max(has(flag::POPULATION_DATA));
    facts
}

/// Every criterion, in display order.
pub const CRITERIA: [Criterion; 23] = {
    use Figure::{MeanDays, Ratio, RatioTimes};
    use Source::{Catalog, Communes, Dossier, Petitions, Procedures, ProceduresSeen};
    [
        Criterion {
            id: "1.1",
            source: Catalog(|p, at| {
                at.within(p.decision_issued_at)
                    .then(|| p.decision_due_at.is_none_or(|due| p.decision_issued_at <= Some(due)))
            }),
            figure: Ratio,
        },
        Criterion {
            id: "1.2",
            source: Catalog(|p, at| {
                let due_passed = at.within(p.public_due_at) && p.public_due_at.is_some_and(|due| due <= at.now);
                let on_time = match (p.made_public_at, p.public_due_at) {
                    (Some(made), Some(due)) => made <= due,
                    (made, None) => made.is_some(),
                    (None, Some(_)) => false,
                };
                (at.within(p.made_public_at) || due_passed).then_some(on_time)
            }),
            figure: Ratio,
        },
        Criterion {
            id: "1.3",
            source: Catalog(|p, at| p.made_public_at.is_some_and(|m| m <= at.now).then_some(p.record_complete)),
            figure: Ratio,
        },
        Criterion { id: "1.4", source: Dossier(|j| counted(j.has(flag::SYNCED_TO_PORTAL))), figure: Ratio },
        Criterion { id: "2.1", source: Dossier(|j| counted(j.on_time)), figure: Ratio },
        Criterion {
            id: "2.2",
            source: Dossier(|j| {
                let d = j.dossier;
                d.received_at().zip(d.completed_at()).map(|(received, completed)| (completed - received).max(0))
            }),
            figure: MeanDays,
        },
        Criterion { id: "3.1", source: Catalog(|p, _| Some(p.online)), figure: Ratio },
        Criterion { id: "3.2", source: Procedures { applies: |p| p.online, fact: Fact::OnlineDossier }, figure: Ratio },
        Criterion {
            id: "3.3",
            source: Dossier(|j| counted(j.dossier.channel == Channel::Online && j.result_fits())),
            figure: RatioTimes("1.4"),
        },
        Criterion { id: "4.1", source: Procedures { applies: |p| p.has_fee, fact: Fact::FeeData }, figure: Ratio },
        Criterion {
            id: "4.2",
            source: ProceduresSeen { counted: Fact::FeeBearing, good: Fact::PaidOnline },
            figure: Ratio,
        },
        Criterion {
            id: "4.3",
            source: Dossier(|j| {
                (j.has(flag::HAS_FEE) || j.has(flag::PAID_ONLINE)).then(|| j.has(flag::PAID_ONLINE) as i64)
            }),
            figure: Ratio,
        },
        Criterion {
            id: "5.1",
            source: Dossier(|j| {
                let has_result = j.dossier.completed_at().is_some() || j.dossier.returned_at().is_some();
                (j.needs_written_result() && has_result).then(|| j.has(flag::ELECTRONIC_RESULT) as i64)
            }),
            figure: Ratio,
        },
        Criterion { id: "5.2", source: Dossier(|j| counted(j.has(flag::DIGITISED) && j.result_fits())), figure: Ratio },
        Criterion { id: "5.3", source: Communes, figure: Ratio },
        Criterion { id: "5.4", source: Dossier(|j| counted(j.has(flag::REUSED_DATA))), figure: Ratio },
        Criterion { id: "5.5", source: Dossier(|j| counted(j.has(flag::PERSONAL_STORE))), figure: Ratio },
        Criterion {
            id: "5.6",
            source: Dossier(|j| counted(j.has(flag::VNEID) || j.has(flag::POPULATION_DATA))),
            figure: Ratio,
        },
        Criterion {
            id: "5.7",
            source: Procedures { applies: |p| p.for_citizens, fact: Fact::PopulationData },
            figure: Ratio,
        },
        Criterion { id: "6.1", source: Petitions(crate::petition::CLASSIFIED), figure: Ratio },
        Criterion { id: "6.2", source: Petitions(crate::petition::ON_TIME), figure: Ratio },
        Criterion { id: "6.3", source: Petitions(crate::petition::SATISFIED), figure: Ratio },
        Criterion {
            id: "6.4",
            source: Dossier(|j| counted(j.on_time && !j.has(flag::DISLIKED) && !j.has(flag::COMPLAINED))),
            figure: Ratio,
        },
    ]
};

/// How many criteria are judged dossier by dossier (the length of a tally).
pub const DOSSIER_SLOTS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < CRITERIA.len() {
        if matches!(CRITERIA[i].source, Source::Dossier(_)) {
            n += 1;
        }
        i += 1;
    }
    n
};

/// Per criterion, its slot among the dossier criteria.
const SLOTS: [Option<usize>; CRITERIA.len()] = {
    let mut slots = [None; CRITERIA.len()];
    let mut n = 0;
    let mut i = 0;
    while i < CRITERIA.len() {
        if matches!(CRITERIA[i].source, Source::Dossier(_)) {
            slots[i] = Some(n);
            n += 1;
        }
        i += 1;
    }
    slots
};

/// The dossier criteria's judging functions and figures, slot by slot.
pub const DOSSIER_JUDGES: [(JudgeDossier, Figure, &str); DOSSIER_SLOTS] = {
    const fn unset(_: &Judged) -> Option<i64> {
        None
    }
    let mut judges: [(JudgeDossier, Figure, &str); DOSSIER_SLOTS] = [(unset, Figure::Ratio, ""); DOSSIER_SLOTS];
    let mut n = 0;
    let mut i = 0;
    while i < CRITERIA.len() {
        if let Source::Dossier(judge) = CRITERIA[i].source {
            judges[n] = (judge, CRITERIA[i].figure, CRITERIA[i].id);
            n += 1;
        }
        i += 1;
    }
    judges
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ratios_name_a_dossier_criterion() {
        for (i, c) in CRITERIA.iter().enumerate() {
            assert!(CRITERIA[..i].iter().all(|o| o.id != c.id), "{} twice", c.id);
            if let Figure::RatioTimes(other) = c.figure {
                assert!(
                    CRITERIA.iter().position(|known| known.id == other).and_then(slot).is_some(),
                    "{}: {other} is not a dossier criterion",
                    c.id
                );
            }
        }
        assert_eq!(
            DOSSIER_JUDGES.iter().map(|j| j.2).collect::<Vec<_>>().join(" "),
            "1.4 2.1 2.2 3.3 4.3 5.1 5.2 5.4 5.5 5.6 6.4"
        );
    }
}
