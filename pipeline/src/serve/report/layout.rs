//! A report's figures laid out once, in the reader's language: a title, the headline sentences,
//! and tables of cells. HTML, PDF and XLSX each write this same layout, so the three cannot
//! disagree on a figure or a word.

use crate::lang::Language;
use crate::serve::report::{LastWeek, Standing, UnitLine, Week, WeeklyReport};

/// How many of the criteria losing points the report shows (its JSON has them all).
const CRITERIA_SHOWN: usize = 6;

/// One cell: numbers stay numbers (the workbook keeps them as such).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number {
        value: f64,
        decimals: usize,
    },
    /// A change, written with its sign.
    Change {
        value: f64,
        decimals: usize,
    },
    Whole(i64),
    Empty,
}

impl Cell {
    pub fn shown(&self, language: Language) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Number { value, decimals } => language.number(*value, *decimals),
            Cell::Change { value, decimals } => {
                let shown = language.number(*value, *decimals);
                if shown.starts_with('-') || shown.trim_start_matches(['0', ',', '.']).is_empty() {
                    shown
                } else {
                    format!("+{shown}")
                }
            }
            Cell::Whole(n) => language.number(*n as f64, 0),
            Cell::Empty => "—".to_owned(),
        }
    }

    pub fn is_numeric(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Its sheet's name in the workbook (short, no punctuation Excel refuses).
    pub sheet: String,
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// What stands instead of an empty table.
    pub none: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub language: Language,
    pub title: String,
    pub subtitle: String,
    pub headline: Vec<String>,
    pub tables: Vec<Table>,
}

fn points(value: f64) -> Cell {
    Cell::Number { value, decimals: 2 }
}

fn change(value: Option<f64>) -> Cell {
    value.map_or(Cell::Empty, |value| Cell::Change { value, decimals: 2 })
}

/// Places gained (a rank that went from 17 to 15 gained 2).
fn places(rank: u32, last: Option<&LastWeek>) -> Cell {
    last.map_or(Cell::Empty, |l| Cell::Change { value: l.rank as f64 - rank as f64, decimals: 0 })
}

struct Words(Language);

impl Words {
    fn say(&self, key: &str, with: &[(&str, &str)]) -> String {
        self.0.say(&format!("report.{key}"), with)
    }

    fn headers(&self, keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| self.say(&format!("col_{k}"), &[])).collect()
    }

    fn band(&self, band: &str) -> String {
        let key = format!("wall.band_{band}");
        match self.0.say(&key, &[]) {
            said if said == key => band.to_owned(),
            said => said,
        }
    }

    /// `2026-11` → "tháng 11/2026"; `2026-Q4` → "quý 4/2026"; `2026-H2`; `2026`.
    fn period(&self, kind: &str, period: &str) -> String {
        let (year, rest) = period.split_once('-').unwrap_or((period, ""));
        let number = rest.trim_start_matches(['Q', 'H']).trim_start_matches('0');
        let key = match kind {
            "half_year" => format!("period_h{number}"),
            kind => format!("period_{kind}"),
        };
        self.say(&key, &[("year", year), ("n", number)])
    }

    fn day(&self, day: chrono::NaiveDate) -> String {
        match self.0 {
            Language::Vi => day.format("%d/%m/%Y").to_string(),
            Language::En => day.format("%Y-%m-%d").to_string(),
        }
    }

    /// An RFC 3339 instant in Vietnam time, to the minute.
    fn moment(&self, text: &str) -> String {
        match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => format!("{} {}", self.day(t.date_naive()), t.format("%H:%M")),
            Err(_) => text.to_owned(),
        }
    }

    /// "up 0.2 points and one place on last week".
    fn moved(&self, standing: &Standing) -> String {
        let Some(last) = &standing.last_week else { return self.say("no_last_week", &[]) };
        let change = standing.total - last.total;
        let shown = self.0.number(change.abs(), 2);
        let points = match shown.trim_start_matches(['0', ',', '.']).is_empty() {
            true => self.say("points_same", &[]),
            false if change > 0.0 => self.say("points_up", &[("points", &shown)]),
            false => self.say("points_down", &[("points", &shown)]),
        };
        let gained = last.rank as i64 - standing.rank as i64;
        let places = match gained {
            0 => self.say("places_same", &[]),
            n if n > 0 => self.say("places_up", &[("places", &n.to_string())]),
            n => self.say("places_down", &[("places", &(-n).to_string())]),
        };
        self.say("moved", &[("points", &points), ("places", &places)])
    }
}

/// The report in `language`.
pub fn lay_out(report: &WeeklyReport, language: Language) -> Layout {
    let w = Words(language);
    let monday = report.week_start.parse().unwrap_or_default();
    let week = Week { monday };
    let title = w.say(
        "title",
        &[("week", &week.number().to_string()), ("from", &w.day(week.monday)), ("to", &w.day(week.sunday()))],
    );
    let subtitle = w.say(
        "subtitle",
        &[
            ("unit", &format!("{} ({})", report.unit_name, report.unit_code)),
            ("judged_at", &w.moment(&report.judged_at)),
        ],
    );
    let headline = report
        .standings
        .iter()
        .map(|s| {
            w.say(
                "headline",
                &[
                    ("period", &w.period(&s.period_kind, &s.period)),
                    ("total", &language.number(s.total, 2)),
                    ("band", &w.band(&s.band)),
                    ("rank", &s.rank.to_string()),
                    ("siblings", &s.siblings.to_string()),
                    ("moved", &w.moved(s)),
                    ("target", &language.number(s.target_total, 0)),
                ],
            )
        })
        .collect();
    let details = report
        .standings
        .iter()
        .find(|s| s.period_kind == report.period_kind)
        .map(|s| w.period(&s.period_kind, &s.period))
        .unwrap_or_default();
    let name = |vi: &str, en: &str| match language {
        Language::Vi => vi.to_owned(),
        Language::En => en.to_owned(),
    };
    let unit_rows = |units: &[UnitLine]| -> Vec<Vec<Cell>> {
        units
            .iter()
            .map(|u| {
                vec![
                    Cell::Whole(u.rank as i64),
                    Cell::Text(u.unit_code.clone()),
                    Cell::Text(u.unit_name.clone()),
                    points(u.total),
                    Cell::Text(w.band(&u.band)),
                    change(u.last_week.as_ref().map(|l| u.total - l.total)),
                    places(u.rank, u.last_week.as_ref()),
                ]
            })
            .collect()
    };
    let unit_header = w.headers(&["rank", "code", "unit", "total", "band", "change", "places"]);
    let table = |sheet: &str, title: String, header: Vec<String>, rows: Vec<Vec<Cell>>| Table {
        sheet: w.say(&format!("sheet_{sheet}"), &[]),
        title,
        header,
        rows,
        none: w.say("none", &[]),
    };
    let tables = vec![
        table(
            "standings",
            w.say("standings", &[]),
            w.headers(&["period", "total", "band", "rank", "siblings", "change", "places", "target"]),
            report
                .standings
                .iter()
                .map(|s| {
                    vec![
                        Cell::Text(w.period(&s.period_kind, &s.period)),
                        points(s.total),
                        Cell::Text(w.band(&s.band)),
                        Cell::Whole(s.rank as i64),
                        Cell::Whole(s.siblings as i64),
                        change(s.last_week.as_ref().map(|l| s.total - l.total)),
                        places(s.rank, s.last_week.as_ref()),
                        Cell::Number { value: s.target_total, decimals: 0 },
                    ]
                })
                .collect(),
        ),
        table(
            "groups",
            w.say("groups", &[("period", &details)]),
            w.headers(&["group", "name", "points", "max", "change"]),
            report
                .groups
                .iter()
                .map(|g| {
                    vec![
                        Cell::Whole(g.group_id as i64),
                        Cell::Text(name(&g.name_vi, &g.name_en)),
                        points(g.points),
                        points(g.max_points),
                        change(g.last_week.map(|l| g.points - l)),
                    ]
                })
                .collect(),
        ),
        table("best", w.say("best", &[("period", &details)]), unit_header.clone(), unit_rows(&report.best_units)),
        table("worst", w.say("worst", &[("period", &details)]), unit_header.clone(), unit_rows(&report.worst_units)),
        table("movers", w.say("movers", &[("period", &details)]), unit_header, unit_rows(&report.movers)),
        table(
            "criteria",
            w.say("criteria", &[("period", &details)]),
            w.headers(&["criterion", "name", "points", "max", "lost", "good_needed"]),
            report
                .criteria
                .iter()
                .take(CRITERIA_SHOWN)
                .map(|c| {
                    vec![
                        Cell::Text(c.criterion.clone()),
                        Cell::Text(name(&c.name_vi, &c.name_en)),
                        points(c.points),
                        points(c.max_points),
                        points(c.points_lost),
                        c.good_needed_for_target.map_or(Cell::Empty, Cell::Whole),
                    ]
                })
                .collect(),
        ),
        table(
            "overdue",
            w.say("overdue", &[]),
            w.headers(&["dossier", "code", "procedure", "received", "due"]),
            report
                .overdue
                .iter()
                .map(|d| {
                    let at = |t: &Option<String>| t.as_deref().map_or(Cell::Empty, |t| Cell::Text(w.moment(t)));
                    vec![
                        Cell::Text(d.dossier_id.clone()),
                        Cell::Text(d.unit_code.clone()),
                        Cell::Text(d.procedure_code.clone()),
                        at(&d.received_at),
                        at(&d.due_at),
                    ]
                })
                .collect(),
        ),
        table(
            "restatements",
            w.say("restatements", &[]),
            w.headers(&["code", "unit", "period", "before", "after", "criteria", "late_events", "recorded"]),
            report
                .restatements
                .iter()
                .map(|r| {
                    vec![
                        Cell::Text(r.unit_code.clone()),
                        Cell::Text(r.unit_name.clone()),
                        Cell::Text(w.period(&r.period_kind, &r.period)),
                        points(r.before),
                        points(r.after),
                        Cell::Text(r.criteria.clone()),
                        Cell::Whole(r.late_events as i64),
                        Cell::Text(w.moment(&r.recorded_at)),
                    ]
                })
                .collect(),
        ),
    ];
    Layout { language, title, subtitle, headline, tables }
}
