//! Reports written and kept: on demand (`Reports::write`), and every Monday 00:00 in Vietnam for
//! the week just ended, for the units down to `[reports] depth`, into the store beside the
//! history (`reports/weekly/<monday>/<unit>.{html,pdf,xlsx,json}`, then the week's `index.json`
//! naming what was written). A start that finds last week unwritten (the pipeline was down at
//! midnight) writes it then.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use index766_core::spec::Spec;
use index766_core::time::{format_time, local_date, Clock, PeriodKind};

use crate::engine::view::View;
use crate::lang::Language;
use crate::persist::store::Store;
use crate::serve::access::Principal;
use crate::serve::query::SqlService;
use crate::serve::report::{html, layout, pdf, xlsx, Asked, Figures, ReportError, Week, WeeklyReport};

const FOLDER: &str = "reports/weekly";

/// What a report is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Pdf,
    Xlsx,
    /// Its figures, as `WeeklyReport`.
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Html, Format::Pdf, Format::Xlsx, Format::Json];

    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
        }
    }

    pub fn parse(text: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.extension() == text)
            .ok_or_else(|| format!("format={text:?}: use html, pdf, xlsx or json"))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Pdf => "application/pdf",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Json => "application/json",
        }
    }

    /// The report written in this format and `language`.
    pub fn write(self, report: &WeeklyReport, language: Language) -> Result<Vec<u8>, String> {
        let laid_out = || layout::lay_out(report, language);
        match self {
            Format::Html => Ok(html::write(&laid_out()).into_bytes()),
            Format::Pdf => pdf::write(&laid_out()),
            Format::Xlsx => xlsx::write(&laid_out()).map_err(|e| format!("the workbook could not be written: {e}")),
            Format::Json => serde_json::to_vec_pretty(report).map_err(|e| e.to_string()),
        }
    }
}

/// One week's kept reports (its `index.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptWeek {
    pub week: String,
    /// Its Monday, YYYY-MM-DD.
    pub week_start: String,
    pub language: Language,
    pub written_at: String,
    /// (unit code, unit name).
    pub units: Vec<(String, String)>,
}

/// Reads and writes the reports.
pub struct Reports {
    pub sql: Arc<SqlService>,
    pub spec: Arc<Spec>,
    pub store: Store,
}

impl Reports {
    /// A report's figures, as `principal` may read them.
    pub async fn gather(&self, asked: &Asked, principal: Option<&Principal>) -> Result<WeeklyReport, ReportError> {
        Figures { sql: &self.sql, spec: &self.spec, principal }.gather(asked).await
    }

    /// The weeks kept, newest first.
    pub async fn kept(&self) -> Vec<KeptWeek> {
        let mut weeks = Vec::new();
        for folder in self.store.list(FOLDER).await.unwrap_or_default().iter().rev() {
            match self.store.get(&format!("{FOLDER}/{folder}/index.json")).await {
                Ok(bytes) => match serde_json::from_slice::<KeptWeek>(&bytes) {
                    Ok(week) => weeks.push(week),
                    Err(e) => {
                        tracing::warn!(folder, error = %e, "a kept report index is not readable; its week is not listed")
                    }
                },
                // A week being written has no index yet.
                Err(_) => continue,
            }
        }
        weeks
    }

    pub async fn kept_file(&self, week: Week, unit: &str, format: Format) -> std::io::Result<Bytes> {
        self.store.get(&format!("{FOLDER}/{}/{unit}.{}", week.monday, format.extension())).await
    }

    /// Writes `week`'s reports for `units` in `language`; the week's index last. A unit whose
    /// figures are missing is left out; none at all writes nothing.
    async fn keep(
        &self,
        week: Week,
        units: &[(String, String)],
        language: Language,
        now: i64,
    ) -> Result<usize, String> {
        let mut written = Vec::new();
        for (code, name) in units {
            let asked = Asked { unit: code.clone(), week, period_kind: PeriodKind::Month };
            let report = match self.gather(&asked, None).await {
                Ok(report) => report,
                Err(ReportError::NoFigures { .. } | ReportError::NoWeeks { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            };
            for format in Format::ALL {
                let bytes = format.write(&report, language)?;
                let path = format!("{FOLDER}/{}/{code}.{}", week.monday, format.extension());
                self.store.put(&path, bytes).await.map_err(|e| format!("{path}: {e}"))?;
            }
            written.push((code.clone(), name.clone()));
        }
        if written.is_empty() {
            return Ok(0);
        }
        let index = KeptWeek {
            week: week.to_string(),
            week_start: week.monday.to_string(),
            language,
            written_at: format_time(now),
            units: written,
        };
        let path = format!("{FOLDER}/{}/index.json", week.monday);
        let bytes = serde_json::to_vec_pretty(&index).expect("an index serializes");
        self.store.put(&path, bytes).await.map_err(|e| format!("{path}: {e}"))?;
        Ok(index.units.len())
    }
}

/// Writes each week's reports once it has ended.
pub struct WeeklyWriter {
    pub reports: Arc<Reports>,
    pub views: watch::Receiver<Arc<View>>,
    pub clock: Arc<Clock>,
    /// `[reports] depth`.
    pub depth: u32,
    /// `[locale] language`.
    pub language: Language,
}

impl WeeklyWriter {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let now = self.clock.now();
            let this_week = Week::of(local_date(now));
            let ended = this_week.before();
            if !self.reports.kept().await.iter().any(|k| k.week_start == ended.monday.to_string()) {
                let units: Vec<(String, String)> = {
                    let view = self.views.borrow();
                    let registry = &view.registry;
                    (0..registry.len())
                        .filter(|&i| registry.depth_of(i) <= self.depth)
                        .map(|i| (registry.units()[i].code.clone(), registry.units()[i].name.clone()))
                        .collect()
                };
                match self.reports.keep(ended, &units, self.language, now).await {
                    Ok(0) => {
                        tracing::info!(week = %ended, "no figures are kept for the week that ended: no weekly report")
                    }
                    Ok(n) => tracing::info!(week = %ended, units = n, "weekly reports written"),
                    Err(e) => {
                        tracing::warn!(week = %ended, error = %e, "the weekly reports could not be written; trying again within the hour")
                    }
                }
            }
            // Until the week ends (checked at least hourly: a clock that jumps is caught up).
            let until_monday = (this_week.end() - now).clamp(1, 3600) as u64;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(until_monday)) => {}
            }
        }
    }
}
