//! The weekly report end to end on Apache Kafka: written on demand for the week so far, its
//! figures against SQL; then, after a restart on the Monday after, written and kept by the Monday
//! writer, fetched with the `index766 report` command, its PDF turned into text by `pdftotext`
//! and into a PNG page by `pdftoppm` (poppler), its workbook read back by openpyxl cell by cell.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::scenario::received;
use crate::serving::{all_applied, config, dossiers, topics};
use crate::support::{http, repo_root, sql, wait_for, Kafka};

const WEDNESDAY: &str = "2026-11-18T12:00:00+07:00";
const NEXT_MONDAY: &str = "2026-11-23T00:30:00+07:00";
/// The ISO week of WEDNESDAY, and its Monday.
const WEEK: &str = "2026-W47";
const MONDAY: &str = "2026-11-16";
/// The Monday of NEXT_MONDAY's week.
const NEXT_WEEK_MONDAY: &str = "2026-11-23";

fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

/// A field of a report's JSON, `a.b` for a nested one.
fn field<'a>(figure: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(figure, |v, f| &v[f])
}

/// Each row of `rows` has `columns` equal (numbers within 1e-9) to the same fields of `figures`.
fn same(what: &str, figures: &Value, rows: &[Value], columns: &[(&str, &str)]) {
    let figures = figures.as_array().unwrap_or_else(|| panic!("{what}: {figures}"));
    assert_eq!(figures.len(), rows.len(), "{what}: the report has {figures:?}, SQL {rows:?}");
    for (figure, row) in figures.iter().zip(rows) {
        for (path, column) in columns {
            let value = field(figure, path);
            assert!(close(value, &row[column]), "{what}: {path} {value} against SQL's {column} {}", row[column]);
        }
    }
}

/// Runs the `index766 report` command against `addr`.
fn report_command(addr: std::net::SocketAddr, args: &[&str], out: &Path) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_index766"))
        .args(["report", "--url", &format!("http://{addr}")])
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("the index766 binary runs");
    assert!(output.status.success(), "index766 report {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn poppler(tool: &str, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian's poppler-utils; tests/run.sh installs it): {e}"));
    assert!(output.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Every sheet of the workbook as openpyxl reads it: {sheet: [[cell value, …], …]}, in order.
fn openpyxl(path: &Path) -> Vec<(String, Vec<Vec<Value>>)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let lib =
        std::env::var("OPENPYXL_PYTHONPATH").unwrap_or_else(|_| format!("{home}/.cache/index766/tools/openpyxl-3.1.5"));
    let script = "import json, sys, openpyxl\n\
                  book = openpyxl.load_workbook(sys.argv[1])\n\
                  print(json.dumps([[s.title, [list(r) for r in s.iter_rows(values_only=True)]] for s in book.worksheets]))";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .env("PYTHONPATH", &lib)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "openpyxl (from {lib}; tests/run.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The rows of a sheet below its title and header (row 3 on).
fn below_header<'a>(sheets: &'a [(String, Vec<Vec<Value>>)], name: &str) -> &'a [Vec<Value>] {
    let (_, rows) = sheets.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no sheet {name}"));
    &rows[3.min(rows.len())..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_equals_sql_and_the_monday_writer_keeps_it_as_html_pdf_and_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Kafka::shared();
    let prefix = "report";
    let mut producer = topics(broker, prefix).await;
    let mut base = dossiers("oct", "H44.01", "2026-10-05", 20, 2);
    base.extend(dossiers("oct", "H44.02", "2026-10-06", 50, 1));
    base.extend(dossiers("nov", "H44.01", "2026-11-03", 30, 2));
    base.extend(dossiers("nov-late", "H44.01", "2026-11-04", 10, 9));
    base.extend(dossiers("nov", "H44.02", "2026-11-05", 40, 1));
    // Received this morning: the stream is current (restatements are judged only then).
    base.extend(dossiers("today", "H44.02", "2026-11-18", 5, 0));
    // Three received and never finished, due before Wednesday: the overdue dossiers to chase.
    base.extend((0..3).map(|i| {
        received(
            &format!("stuck-{i}"),
            "2026-11-09T09:00:00+07:00",
            &format!("2026-11-1{}T17:00:00+07:00", 2 + i),
            "H44.01",
        )
    }));
    producer.send(&base);
    let nowhere: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let start = |shutdown: CancellationToken, as_of: &str| {
        let mut config = config(&broker.bootstrap, prefix, nowhere, dir.path());
        config.scoring.as_of = as_of.to_owned();
        // Within reach of the province's month: some criterion alone can close the gap.
        config.scoring.target_total = 53.0;
        async move { index766::Pipeline::start(config, shutdown).await.unwrap() }
    };

    let shutdown = CancellationToken::new();
    let pipeline = start(shutdown.clone(), WEDNESDAY).await;
    let addr = pipeline.http_addr;
    all_applied(pipeline.metrics.clone(), producer.sent).await;
    let standing = dir.path().join("snapshots/restatements/log.json");
    wait_for("October's standing kept", Duration::from_secs(30), || standing.exists().then_some(())).await;
    // Ten October dossiers arrive late: October is restated this week, for H44.01 and H44.
    producer.send(&dossiers("late-oct", "H44.01", "2026-10-07", 10, 9));
    all_applied(pipeline.metrics.clone(), producer.sent).await;
    let restated = wait_for("the restatements", Duration::from_secs(30), || {
        let rows = sql(addr, "SELECT * FROM restatements ORDER BY recorded_at, unit_code");
        (rows.len() == 2).then_some(rows)
    })
    .await;
    // The week's kept figures are those of the view now (a snapshot a second).
    let week_total = format!(
        "SELECT w.total FROM weekly_totals w JOIN totals t ON t.unit_code = w.unit_code AND t.period = w.period \
         AND t.period_kind = w.period_kind WHERE w.week_start = DATE '{MONDAY}' AND w.unit_code = 'H44' \
         AND w.period_kind = 'month' AND t.is_current AND w.total = t.total"
    );
    wait_for("the week's figures kept after the late events", Duration::from_secs(30), || {
        (sql(addr, &week_total).len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = get_json(addr, "/reports/weekly?unit=H44&format=json");
    assert_eq!(
        (report["week"].as_str(), report["week_start"].as_str()),
        (Some(WEEK), Some(MONDAY)),
        "the newest week by default"
    );
    assert_eq!(report["period_kind"], "month");
    let week_rows = |table: &str, filter: &str, order: &str| {
        sql(addr, &format!("SELECT * FROM {table} WHERE week_start = DATE '{MONDAY}' AND {filter} ORDER BY {order}"))
    };
    let standings = week_rows("weekly_totals", "unit_code = 'H44' AND period_kind IN ('month', 'year')", "period_kind");
    let mut figures = report["standings"].as_array().unwrap().clone();
    figures.sort_by_key(|s| s["period_kind"].as_str().unwrap().to_owned());
    let columns = [
        ("period", "period"),
        ("total", "total"),
        ("band", "band"),
        ("rank", "rank"),
        ("siblings", "siblings"),
        ("target_total", "target_total"),
    ];
    same("standings", &Value::from(figures), &standings, &columns);
    assert!(
        report["standings"].as_array().unwrap().iter().all(|s| s["last_week"].is_null()),
        "no figures of week 46 are kept"
    );

    let groups = sql(
        addr,
        &format!(
            "SELECT w.group_id, sum(w.points) AS points, max(g.points) AS live FROM weekly_scores w JOIN group_scores g \
             ON g.unit_code = w.unit_code AND g.period = w.period AND g.period_kind = w.period_kind AND g.group_id = w.group_id \
             WHERE w.week_start = DATE '{MONDAY}' AND w.unit_code = 'H44' AND w.period_kind = 'month' GROUP BY w.group_id ORDER BY w.group_id"
        ),
    );
    same("groups", &report["groups"], &groups, &[("group_id", "group_id"), ("points", "points"), ("points", "live")]);

    let below = |order: &str| {
        week_rows("weekly_totals", "parent_code = 'H44' AND period_kind = 'month'", &format!("{order} LIMIT 5"))
    };
    let unit_columns = [("unit_code", "unit_code"), ("total", "total"), ("rank", "rank"), ("band", "band")];
    same("best units", &report["best_units"], &below("total DESC, unit_code"), &unit_columns);
    same("worst units", &report["worst_units"], &below("total, unit_code DESC"), &unit_columns);
    assert_eq!(report["movers"], Value::Array(vec![]), "no one moved against a week with no figures");

    // Worked out from the kept weekly figures; the live gaps table works them out from the view.
    let gaps = sql(
        addr,
        "SELECT criterion, points_lost, good_needed_for_target FROM gaps WHERE unit_code = 'H44' AND period_kind = 'month' \
         AND is_current AND points_lost > 0 ORDER BY loss_rank",
    );
    assert!(
        gaps.iter().any(|g| g["good_needed_for_target"].as_i64().is_some_and(|n| n > 0)),
        "some criterion alone can close the gap: {gaps:?}"
    );
    let gap_columns = [
        ("criterion", "criterion"),
        ("points_lost", "points_lost"),
        ("good_needed_for_target", "good_needed_for_target"),
    ];
    same("criteria losing most", &report["criteria"], &gaps, &gap_columns);

    let overdue = sql(
        addr,
        "SELECT dossier_id FROM dossiers WHERE timeliness = 'open_overdue' ORDER BY due_at, dossier_id LIMIT 20",
    );
    assert_eq!(overdue.len(), 3, "{overdue:?}");
    same("overdue dossiers", &report["overdue"], &overdue, &[("dossier_id", "dossier_id")]);
    let restatement_columns = [
        ("unit_code", "unit_code"),
        ("period", "period"),
        ("before", "before"),
        ("after", "after"),
        ("late_events", "late_events"),
    ];
    same("restatements", &report["restatements"], &restated, &restatement_columns);

    let (status, english) = http(addr, "GET", "/reports/weekly?unit=H44&format=html&lang=en", "");
    assert_eq!(status, 200, "{english}");
    assert!(english.contains("Index 766 weekly report, week 47 (2026-11-16 – 2026-11-22)"), "{english}");
    for (path, status, says) in [
        ("/reports/weekly?week=2026-47", 400, "YYYY-Www"),
        ("/reports/weekly?week=2026-W40", 404, "no figures are kept for H44 in week 2026-W40"),
        ("/reports/weekly?format=doc", 400, "use html, pdf, xlsx or json"),
        ("/reports/weekly?unit=H99", 404, "not a unit you may read"),
        ("/reports/weekly?units=H44", 400, "takes no parameter"),
        ("/reports/kept?unit=H44", 404, "no weekly report of H44 is kept yet"),
    ] {
        let (got, body) = http(addr, "GET", path, "");
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    assert_eq!(get_json(addr, "/reports")["reports"], Value::Array(vec![]), "week 46 has no figures: nothing kept");
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // The Monday after, 00:30: the writer writes week 47 (the pipeline was down at midnight).
    let shutdown = CancellationToken::new();
    let pipeline = start(shutdown.clone(), NEXT_MONDAY).await;
    let addr = pipeline.http_addr;
    let listed = wait_for("week 47 kept", Duration::from_secs(60), || {
        let reports = get_json(addr, "/reports")["reports"].as_array().cloned().unwrap_or_default();
        reports.iter().any(|r| r["week"] == WEEK && r["unit_code"] == "H44").then_some(reports)
    })
    .await;
    let units: Vec<&str> = listed.iter().map(|r| r["unit_code"].as_str().unwrap()).collect();
    assert!(
        units.contains(&"H44.01") && units.contains(&"H44.02"),
        "[reports] depth 1 writes the units below too: {units:?}"
    );
    let kept = get_json(addr, &format!("/reports/kept?week={WEEK}&unit=H44&format=json"));
    for part in
        ["week", "judged_at", "standings", "groups", "best_units", "worst_units", "movers", "criteria", "restatements"]
    {
        assert_eq!(kept[part], report[part], "the kept report's {part} are the week's figures");
    }
    let (status, html) = http(addr, "GET", &format!("/reports/kept?week={WEEK}&unit=H44&format=html"), "");
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"vi\">") && html.contains("Báo cáo Chỉ số 766 tuần 47"), "{html}");
    let (status, body) = http(addr, "GET", &format!("/reports/kept?week={WEEK}&unit=H99.9&format=pdf"), "");
    assert_eq!(status, 404, "{body}");

    let pdf = dir.path().join("week.pdf");
    report_command(addr, &["--week", WEEK, "--kept", "--format", "pdf"], &pdf);
    let text = String::from_utf8(poppler("pdftotext", &["-layout", pdf.to_str().unwrap(), "-"])).unwrap();
    let month = &kept["standings"][0];
    let vi = |x: f64| format!("{x:.2}").replace('.', ",");
    for says in [
        "Báo cáo Chỉ số 766 tuần 47 (16/11/2026 – 22/11/2026)".to_owned(),
        format!("{} ({})", kept["unit_name"].as_str().unwrap(), "H44"),
        format!("Tháng 11/2026: {} điểm", vi(month["total"].as_f64().unwrap())),
        format!("hạng {}/{}", month["rank"], month["siblings"]),
        "Sáu nhóm chỉ tiêu".to_owned(),
        "Hồ sơ quá hạn cần đôn đốc".to_owned(),
        "stuck-0".to_owned(),
        kept["restatements"][1]["unit_name"].as_str().unwrap().to_owned(),
        vi(kept["criteria"][0]["points_lost"].as_f64().unwrap()),
    ] {
        assert!(text.contains(&says), "the PDF's text has {says:?}:\n{text}");
    }
    let page = dir.path().join("page");
    poppler(
        "pdftoppm",
        &["-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", pdf.to_str().unwrap(), page.to_str().unwrap()],
    );
    let png = std::fs::read(dir.path().join("page.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a page drawn: {} bytes", png.len());
    let artifacts = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("weekly-report-vi.png"), &png).unwrap();

    let xlsx = dir.path().join("week.xlsx");
    report_command(addr, &["--week", WEEK, "--kept", "--format", "xlsx"], &xlsx);
    let sheets = openpyxl(&xlsx);
    let names: Vec<&str> = sheets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Tóm tắt",
            "Tổng điểm",
            "Nhóm chỉ tiêu",
            "Dẫn đầu",
            "Thấp nhất",
            "Thay đổi",
            "Chỉ tiêu mất điểm",
            "Hồ sơ quá hạn",
            "Điều chỉnh"
        ]
    );
    let cells = |sheet: &str, figures: &Value, columns: &[(usize, &str)]| {
        let rows = below_header(&sheets, sheet);
        let figures = figures.as_array().unwrap();
        assert_eq!(rows.len(), figures.len(), "{sheet}: {rows:?}");
        for (row, figure) in rows.iter().zip(figures) {
            for (column, path) in columns {
                let value = field(figure, path);
                assert!(
                    close(&row[*column], value),
                    "{sheet} column {column}: {} against the report's {path} {value}",
                    row[*column]
                );
            }
        }
    };
    cells(
        "Tổng điểm",
        &kept["standings"],
        &[(1, "total"), (3, "rank"), (4, "siblings"), (5, "last_week"), (7, "target_total")],
    );
    cells(
        "Nhóm chỉ tiêu",
        &kept["groups"],
        &[(0, "group_id"), (1, "name_vi"), (2, "points"), (3, "max_points"), (4, "last_week")],
    );
    cells("Dẫn đầu", &kept["best_units"], &[(0, "rank"), (1, "unit_code"), (2, "unit_name"), (3, "total")]);
    cells("Thấp nhất", &kept["worst_units"], &[(0, "rank"), (1, "unit_code"), (2, "unit_name"), (3, "total")]);
    // The workbook, like the page, shows the six losing most.
    let shown = Value::from(kept["criteria"].as_array().unwrap()[..6].to_vec());
    cells(
        "Chỉ tiêu mất điểm",
        &shown,
        &[
            (0, "criterion"),
            (1, "name_vi"),
            (2, "points"),
            (3, "max_points"),
            (4, "points_lost"),
            (5, "good_needed_for_target"),
        ],
    );
    cells("Hồ sơ quá hạn", &kept["overdue"], &[(0, "dossier_id"), (1, "unit_code"), (2, "procedure_code")]);
    cells(
        "Điều chỉnh",
        &kept["restatements"],
        &[(0, "unit_code"), (1, "unit_name"), (3, "before"), (4, "after"), (5, "criteria"), (6, "late_events")],
    );
    let (_, movers) = sheets.iter().find(|(n, _)| n == "Thay đổi").unwrap();
    assert_eq!(movers[2][0], Value::from("Không có."), "an empty table says so: {movers:?}");

    // Week 48 so far, against week 47: ten dossiers on time for H44.02 move it and the province.
    producer.send(&dossiers("w48", "H44.02", "2026-11-20", 10, 0));
    let this_week = format!(
        "SELECT w.unit_code FROM weekly_totals w JOIN totals t ON t.unit_code = w.unit_code AND t.period = w.period \
         AND t.period_kind = w.period_kind WHERE w.week_start = DATE '{NEXT_WEEK_MONDAY}' AND w.unit_code = 'H44.02' \
         AND w.period_kind = 'month' AND t.is_current AND w.total = t.total \
         AND (SELECT count(*) FROM dossiers WHERE dossier_id LIKE 'w48-%') = 10"
    );
    wait_for("week 48's figures kept after its dossiers", Duration::from_secs(60), || {
        (sql(addr, &this_week).len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w48 = get_json(addr, "/reports/weekly?unit=H44&format=json");
    assert_eq!(w48["week"], "2026-W48", "the newest week by default");
    let before = sql(
        addr,
        &format!(
            "SELECT period_kind, period, total, rank FROM weekly_totals WHERE week_start = DATE '{MONDAY}' \
             AND unit_code = 'H44' AND period_kind IN ('month', 'year') ORDER BY period_kind"
        ),
    );
    let mut standings = w48["standings"].as_array().unwrap().clone();
    standings.sort_by_key(|s| s["period_kind"].as_str().unwrap().to_owned());
    let last_week = [("last_week.period", "period"), ("last_week.total", "total"), ("last_week.rank", "rank")];
    same("last week's standings", &Value::from(standings), &before, &last_week);
    let moved = sql(
        addr,
        &format!(
            "SELECT n.unit_code, n.total, o.total AS before, o.rank AS rank_before FROM weekly_totals n JOIN weekly_totals o \
             ON o.unit_code = n.unit_code AND o.period_kind = n.period_kind AND o.week_start = DATE '{MONDAY}' \
             WHERE n.week_start = DATE '{NEXT_WEEK_MONDAY}' AND n.parent_code = 'H44' AND n.period_kind = 'month' \
             AND n.total <> o.total ORDER BY abs(n.total - o.total) DESC, n.unit_code LIMIT 5"
        ),
    );
    assert!(moved.iter().any(|m| m["unit_code"] == "H44.02"), "H44.02 moved: {moved:?}");
    let mover_columns = [
        ("unit_code", "unit_code"),
        ("total", "total"),
        ("last_week.total", "before"),
        ("last_week.rank", "rank_before"),
    ];
    same("movers", &w48["movers"], &moved, &mover_columns);
    let month = w48["standings"].as_array().unwrap().iter().find(|s| s["period_kind"] == "month").unwrap();
    let change = month["total"].as_f64().unwrap() - month["last_week"]["total"].as_f64().unwrap();
    let says = match change {
        c if c > 0.005 => format!("tăng {} điểm và giữ nguyên thứ hạng so với tuần trước", vi(c)),
        c if c < -0.005 => format!("giảm {} điểm và giữ nguyên thứ hạng so với tuần trước", vi(-c)),
        _ => panic!("the province's month moved with H44.02's dossiers: {month}"),
    };
    let (status, html) = http(addr, "GET", "/reports/weekly?unit=H44&format=html", "");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&says), "the headline says {says:?}: {html}");

    // The wall's trend charts over the two days and two weeks of history kept by now.
    let days = sql(addr, "SELECT day FROM daily_totals WHERE unit_code = 'H44' AND period_kind = 'month' ORDER BY day");
    assert_eq!(days.len(), 2, "18/11 and 23/11 kept: {days:?}");
    let browser = crate::browser::Browser::open(addr).await;
    crate::browser::check_trends_and_a_past_period(&browser, addr, crate::browser::Lang::Vi, "2026-10").await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
