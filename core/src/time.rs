//! Instants, the injected clock, and the portal's calendar periods (UTC+7).
//!
//! Instants are whole seconds since the Unix epoch (UTC). Periods are calendar months,
//! quarters, half-years and years in Asia/Ho_Chi_Minh time, which has had no daylight saving since 1975,
//! so a fixed +07:00 offset is exact.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};

/// Seconds since the Unix epoch, UTC.
pub type Instant = i64;

pub const VIETNAM_OFFSET_SECS: i32 = 7 * 3600;

fn vietnam() -> FixedOffset {
    FixedOffset::east_opt(VIETNAM_OFFSET_SECS).expect("valid offset")
}

/// Parses an RFC 3339 time that carries its UTC offset (`Z` or `±hh:mm`).
pub fn parse_time(text: &str) -> Result<Instant, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp())
}

/// The calendar day of an instant in Vietnam time.
pub fn local_date(t: Instant) -> NaiveDate {
    chrono::DateTime::from_timestamp(t + VIETNAM_OFFSET_SECS as i64, 0).expect("in range").date_naive()
}

/// Formats an instant in Vietnam time, the way users read it.
pub fn format_time(t: Instant) -> String {
    vietnam().timestamp_opt(t, 0).single().map(|d| d.to_rfc3339()).unwrap_or_default()
}

/// Where "now" comes from: the wall clock, or a fixed instant (tests, what-if runs).
#[derive(Debug)]
pub enum Clock {
    Wall,
    Fixed(AtomicI64),
}

impl Clock {
    pub fn fixed(t: Instant) -> Clock {
        Clock::Fixed(AtomicI64::new(t))
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::Wall => Utc::now().timestamp(),
            Clock::Fixed(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a fixed clock (tests drive time with this); the wall clock cannot be set.
    pub fn set(&self, t: Instant) {
        if let Clock::Fixed(now) = self {
            now.store(t, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodKind {
    Month,
    Quarter,
    HalfYear,
    Year,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 4] = [PeriodKind::Month, PeriodKind::Quarter, PeriodKind::HalfYear, PeriodKind::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Month => "month",
            PeriodKind::Quarter => "quarter",
            PeriodKind::HalfYear => "half_year",
            PeriodKind::Year => "year",
        }
    }
}

/// A calendar period in UTC+7: `index` is the month (1-12), the quarter (1-4), the half (1-2),
/// or 1 for a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub kind: PeriodKind,
    pub year: i32,
    pub index: u32,
}

impl Period {
    /// The period of `kind` that contains instant `t`.
    pub fn containing(kind: PeriodKind, t: Instant) -> Period {
        Period::of_kind(kind, local_date(t))
    }

    /// The month, quarter, half-year and year containing `t` (the date worked out once: this
    /// runs twice for every event applied).
    pub fn all_containing(t: Instant) -> [Period; 4] {
        let date = local_date(t);
        PeriodKind::ALL.map(|kind| Period::of_kind(kind, date))
    }

    fn of_kind(kind: PeriodKind, date: NaiveDate) -> Period {
        let (year, month) = (date.year(), date.month());
        let index = match kind {
            PeriodKind::Month => month,
            PeriodKind::Quarter => (month - 1) / 3 + 1,
            PeriodKind::HalfYear => (month - 1) / 6 + 1,
            PeriodKind::Year => 1,
        };
        Period { kind, year, index }
    }

    /// Whether the period includes `month` (a period of kind Month).
    pub fn covers(self, month: Period) -> bool {
        let first = self.first_month();
        self.year == month.year && (first..first + self.months()).contains(&month.index)
    }

    fn first_month(self) -> u32 {
        match self.kind {
            PeriodKind::Month => self.index,
            PeriodKind::Quarter => (self.index - 1) * 3 + 1,
            PeriodKind::HalfYear => (self.index - 1) * 6 + 1,
            PeriodKind::Year => 1,
        }
    }

    fn months(self) -> u32 {
        match self.kind {
            PeriodKind::Month => 1,
            PeriodKind::Quarter => 3,
            PeriodKind::HalfYear => 6,
            PeriodKind::Year => 12,
        }
    }

    /// First instant of the period.
    pub fn start(self) -> Instant {
        local_month_start(self.year, self.first_month())
    }

    /// First instant after the period (its exclusive end).
    pub fn end(self) -> Instant {
        let month0 = self.first_month() - 1 + self.months();
        local_month_start(self.year + (month0 / 12) as i32, month0 % 12 + 1)
    }

    /// The last instant that still belongs to the period: dossiers of a closed period that have
    /// no end yet are judged at this instant.
    pub fn last_instant(self) -> Instant {
        self.end() - 1
    }

    /// The period just before this one, of the same kind.
    pub fn previous(self) -> Period {
        Period::containing(self.kind, self.start() - 1)
    }
}

fn local_month_start(year: i32, month: u32) -> Instant {
    let date = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
    let local = date.and_hms_opt(0, 0, 0).expect("midnight");
    vietnam().from_local_datetime(&local).single().expect("fixed offset is unambiguous").timestamp()
}

impl fmt::Display for Period {
    /// `2026-11`, `2026-Q4`, `2026-H2`, `2026`: what the portal's users write.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeriodKind::Month => write!(f, "{}-{:02}", self.year, self.index),
            PeriodKind::Quarter => write!(f, "{}-Q{}", self.year, self.index),
            PeriodKind::HalfYear => write!(f, "{}-H{}", self.year, self.index),
            PeriodKind::Year => write!(f, "{}", self.year),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_vietnam_time_not_utc() {
        // 2026-03-31T17:30Z is 2026-04-01 00:30 in Hanoi: April, Q2.
        let t = parse_time("2026-03-31T17:30:00Z").unwrap();
        let [m, q, h, y] = Period::all_containing(t).map(|p| p.to_string());
        assert_eq!([m, q, h, y], ["2026-04", "2026-Q2", "2026-H1", "2026"]);
        // One second earlier in UTC+7 terms is still March.
        let t = parse_time("2026-03-31T23:59:59+07:00").unwrap();
        assert_eq!(Period::containing(PeriodKind::Month, t).to_string(), "2026-03");
    }

    #[test]
    fn period_bounds_and_previous() {
        let q4 = Period { kind: PeriodKind::Quarter, year: 2026, index: 4 };
        assert_eq!(q4.start(), parse_time("2026-10-01T00:00:00+07:00").unwrap());
        assert_eq!(q4.end(), parse_time("2027-01-01T00:00:00+07:00").unwrap());
        assert_eq!(q4.previous().to_string(), "2026-Q3");
        let jan = Period { kind: PeriodKind::Month, year: 2026, index: 1 };
        assert_eq!(jan.previous().to_string(), "2025-12");
        let dec = Period { kind: PeriodKind::Month, year: 2026, index: 12 };
        assert_eq!(dec.end(), parse_time("2027-01-01T00:00:00+07:00").unwrap());
        let h2 = Period { kind: PeriodKind::HalfYear, year: 2026, index: 2 };
        assert_eq!(
            (h2.start(), h2.previous().to_string()),
            (parse_time("2026-07-01T00:00:00+07:00").unwrap(), "2026-H1".into())
        );
    }

    #[test]
    fn times_without_offset_are_refused() {
        assert!(parse_time("2026-11-03T08:00:00").is_err());
        assert_eq!(parse_time("2026-11-03T08:00:00+07:00").unwrap(), parse_time("2026-11-03T01:00:00Z").unwrap());
    }
}
