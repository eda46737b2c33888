//! A real headless Chromium (Debian's), driven over the W3C WebDriver protocol through
//! ChromeDriver, and the checks of the IOC page against `/sql`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{http_json, repo_root, sql, wait_for, Server};

pub struct Browser {
    driver: Server,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens the page served at `pipeline` and waits for its first complete refresh.
    pub async fn open(pipeline: SocketAddr) -> Browser {
        Browser::open_at(&format!("http://{pipeline}/")).await
    }

    /// Opens the page at `url` (with a `#token=…` for a signed-in wall) and waits for its first
    /// complete refresh.
    pub async fn open_at(url: &str) -> Browser {
        let driver = Server::start("chromedriver", |port| vec![format!("--port={port}")]);
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps dialling Google, which this
        // network refuses; a fresh profile keeps runs independent.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,1300",
            // An IOC's browser: Vietnamese first, as its Accept-Language says.
            "--accept-lang=vi-VN,vi",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"pageLoadStrategy": "eager", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let (status, answer) = http_json(driver.addr, "POST", "/session", &capabilities);
        assert_eq!(status, 200, "ChromeDriver could not start Chromium: {answer}");
        let session = answer["value"]["sessionId"].as_str().expect("a session id").to_owned();
        let browser = Browser { driver, session, _profile: profile };
        browser.command("POST", "url", json!({ "url": url }));
        // A mark on the loaded document: it is gone if the page ever reloads.
        browser.execute("window.__index766_loaded = true; return true");
        wait_for("the page's first refresh", Duration::from_secs(20), || {
            (browser.execute("return document.body.dataset.ready || ''") == "1").then_some(())
        })
        .await;
        browser
    }

    fn command(&self, method: &str, what: &str, body: Value) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let (status, answer) = http_json(self.driver.addr, method, &path, &body);
        assert_eq!(status, 200, "WebDriver {method} {what}: {answer}");
        answer["value"].clone()
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Value {
        self.command("POST", "execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Runs `script` in the page and waits for it to call its callback (the last argument).
    pub fn execute_async(&self, script: &str) -> Value {
        self.command("POST", "execute/async", json!({ "script": script, "args": [] }))
    }

    /// Completed refreshes of the page (each after a published view).
    pub fn refreshes(&self) -> u64 {
        self.execute("return Number(document.body.dataset.refreshes || 0)").as_u64().unwrap()
    }

    pub fn same_document(&self) -> bool {
        self.execute("return window.__index766_loaded === true") == json!(true)
    }

    pub fn click(&self, selector: &str) {
        let clicked =
            self.execute(&format!("const e = document.querySelector({selector:?}); if (e) e.click(); return !!e"));
        assert_eq!(clicked, json!(true), "nothing to click at {selector}");
    }

    /// Sets the window's size, in CSS pixels, and waits for the page to take it.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command("POST", "window/rect", json!({ "width": width, "height": height }));
        wait_for("the window resized", Duration::from_secs(10), || {
            (self.execute("return window.innerWidth").as_u64() == Some(width.into())).then_some(())
        })
        .await;
    }

    /// Saves a PNG of the window as a test artifact (tests/artifacts/, not committed).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.command("GET", "screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let path = repo_root().join(format!("tests/artifacts/{name}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http_json(self.driver.addr, "DELETE", &format!("/session/{}", self.session), &Value::Null);
    }
}

/// The wall's language, and how it writes a number with two decimals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    fn fixed(self, value: &Value) -> String {
        let text = format!("{:.2}", value.as_f64().unwrap());
        match self {
            Lang::Vi => text.replace('.', ","),
            Lang::En => text,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }
}

/// What the page shows of the province: total, groups, ranking rows, alert units.
const READ_PAGE: &str = r##"
const text = (root, sel) => (root.querySelector(sel)?.textContent || "").trim();
return JSON.stringify({
  lang: document.documentElement.lang,
  total: text(document, "#province-total"),
  group_names: [...document.querySelectorAll(".group-gauge .group-name")].map(g => g.firstChild.textContent.trim()),
  unit: document.querySelector("#province-total").dataset.unit || "",
  groups: [...document.querySelectorAll(".group-gauge")].map(g => [g.dataset.group, text(g, ".group-points")]),
  ranking: [...document.querySelectorAll("#ranking tbody tr")].map(r => [r.dataset.unit, text(r, ".rank"), text(r, ".total"), text(r, ".delta")]),
  alerts: [...document.querySelectorAll("#alerts .alert")].map(a => a.dataset.unit),
  causes: [...document.querySelectorAll("#alerts .causes")].map(c => c.textContent.replace(/^[^:]*:\s*/, "")),
});
"##;

/// The province's figures as the page should show them, from `/sql`.
fn expected_page(addr: SocketAddr, alert_unit: Option<&str>, lang: Lang) -> Value {
    let current = "is_current AND period_kind = 'month'";
    let province = &sql(addr, &format!("SELECT unit_code, total FROM totals WHERE {current} AND depth = 0"))[0];
    let groups = sql(
        addr,
        &format!("SELECT group_id, points, group_name_{} AS name FROM group_scores WHERE {current} AND depth = 0 ORDER BY group_id", lang.tag()),
    );
    let ranking = sql(
        addr,
        &format!(
            "SELECT unit_code, rank, total, delta FROM totals WHERE {current} AND depth = 1 ORDER BY rank, unit_name"
        ),
    );
    let causes =
        sql(addr, "SELECT causes FROM alerts WHERE state = 'firing' AND causes <> '' ORDER BY fired_at DESC, id");
    // "2.1 -10.00" as the language writes the change: "2.1 -10,00" in Vietnamese.
    let local = |text: &str| match lang {
        Lang::Vi => text
            .split(' ')
            .map(|w| if w.starts_with(['+', '-']) { w.replace('.', ",") } else { w.to_owned() })
            .collect::<Vec<_>>()
            .join(" "),
        Lang::En => text.to_owned(),
    };
    let fixed = |v: &Value| lang.fixed(v);
    let delta = |d: &Value| {
        d.as_f64().map_or("—".to_owned(), |x| format!("{}{}", if x >= 0.0 { "+" } else { "" }, lang.fixed(d)))
    };
    json!({
        "lang": lang.tag(),
        "total": fixed(&province["total"]),
        "group_names": groups.iter().map(|g| g["name"].clone()).collect::<Vec<_>>(),
        "unit": province["unit_code"],
        "groups": groups.iter().map(|g| json!([g["group_id"].to_string(), fixed(&g["points"])])).collect::<Vec<_>>(),
        "ranking": ranking.iter().map(|r| json!([r["unit_code"], r["rank"].to_string(), fixed(&r["total"]), delta(&r["delta"])])).collect::<Vec<_>>(),
        "alerts": alert_unit.into_iter().collect::<Vec<_>>(),
        "causes": causes.iter().map(|c| local(c["causes"].as_str().unwrap())).collect::<Vec<_>>(),
    })
}

/// The page shows what `/sql` says (it may take a refresh or two to catch up); then a click on
/// H44.01 drills down to its criteria and the dossiers that cost it points, and the breadcrumb
/// leads back.
/// The page shows what /sql says, written in `lang`: its numbers, the groups' names, the ranking,
/// the alerts, then the drill-down to H44.01 and back.
pub async fn check_dashboard(browser: &Browser, addr: SocketAddr, alert_unit: Option<&str>, lang: Lang) {
    let expected = expected_page(addr, alert_unit, lang);
    let mut shown = Value::Null;
    let matched = wait_for_quietly(Duration::from_secs(20), || {
        shown = serde_json::from_str(browser.execute(READ_PAGE).as_str().unwrap()).unwrap();
        shown == expected
    })
    .await;
    assert!(matched, "the page shows\n{shown:#}\nbut /sql says\n{expected:#}");

    browser.click("#ranking tbody tr[data-unit=\"H44.01\"]");
    let criteria = sql(addr, "SELECT criterion, points FROM scores WHERE is_current AND period_kind = 'month' AND unit_code = 'H44.01' ORDER BY criterion");
    let expected_points: Vec<(String, String)> =
        criteria.iter().map(|c| (c["criterion"].as_str().unwrap().to_owned(), lang.fixed(&c["points"]))).collect();
    let late = sql(addr, "SELECT count(*) AS n FROM dossiers WHERE unit_code = 'H44.01' AND timeliness = 'late'")[0]
        ["n"]
        .as_u64()
        .unwrap();
    let drill_down = r##"
      const rows = [...document.querySelectorAll("#criteria tbody tr")].map(r => [r.dataset.criterion, r.querySelector(".points").textContent.trim()]);
      rows.sort((a, b) => a[0].localeCompare(b[0], undefined, {numeric: true}));
      return JSON.stringify({
        selected: document.querySelector("#selected-unit").dataset.unit || "",
        criteria: rows,
        dossiers: [...document.querySelectorAll("#dossiers tbody tr")].map(r => r.dataset.dossier),
        received: [...document.querySelectorAll("#dossiers tbody tr td:nth-child(4)")].map(td => td.textContent),
      });"##;
    let mut page = Value::Null;
    let shown_drill_down = wait_for_quietly(Duration::from_secs(20), || {
        page = serde_json::from_str(browser.execute(drill_down).as_str().unwrap()).unwrap();
        page["selected"] == "H44.01" && !page["criteria"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(shown_drill_down, "drill-down to H44.01: {page:#}");
    let mut shown_points: Vec<(String, String)> = serde_json::from_value(page["criteria"].clone()).unwrap();
    let mut expected_sorted = expected_points;
    let numeric = |c: &str| c.split('.').map(|p| p.parse::<u32>().unwrap()).collect::<Vec<_>>();
    shown_points.sort_by_key(|(c, _)| numeric(c));
    expected_sorted.sort_by_key(|(c, _)| numeric(c));
    assert_eq!(shown_points, expected_sorted, "H44.01's criteria");
    let dossiers: Vec<String> = serde_json::from_value(page["dossiers"].clone()).unwrap();
    assert!(!dossiers.is_empty() && dossiers.len() <= 50, "{dossiers:?}");
    // Late dossiers come first among those that cost points.
    let late_shown = dossiers.iter().take(late as usize).filter(|d| d.starts_with("late-")).count() as u64;
    assert_eq!(late_shown, late.min(50), "the late dossiers lead the list: {dossiers:?}");
    // Dates the language's way: 06/11/2026 14:30, or 2026-11-06 14:30 (`d`: a digit).
    let shape = match lang {
        Lang::Vi => "dd/dd/dddd dd:dd",
        Lang::En => "dddd-dd-dd dd:dd",
    };
    let shaped = |text: &str| {
        text.len() == shape.len()
            && text.chars().zip(shape.chars()).all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p })
    };
    assert!(page["received"].as_array().unwrap().iter().all(|d| shaped(d.as_str().unwrap())), "{page:#}");
    browser.click("#breadcrumb a[data-unit=\"H44\"]");
    let back = wait_for_quietly(Duration::from_secs(20), || {
        browser.execute("return document.querySelector('#selected-unit').dataset.unit") == json!("H44")
    })
    .await;
    assert!(back, "the breadcrumb leads back to the province");
}

/// Polls `check` for up to `deadline`; whether it ever held.
async fn wait_for_quietly(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The trend charts draw the daily and weekly history SQL holds for the selected unit (the
/// province), point for point; choosing a past period in the selector shows that period's figures.
pub async fn check_trends_and_a_past_period(browser: &Browser, addr: SocketAddr, lang: Lang, past: &str) {
    let points = |chart: &str| -> Vec<(String, f64)> {
        let script = format!(
            "return JSON.stringify([...document.querySelectorAll('#{chart} circle')].map(c => [c.dataset.x, Number(c.dataset.y)]))"
        );
        serde_json::from_str(browser.execute(&script).as_str().unwrap()).unwrap()
    };
    let history = |query: &str| -> Vec<(String, f64)> {
        sql(addr, query).iter().map(|r| (r["x"].as_str().unwrap().to_owned(), r["y"].as_f64().unwrap())).collect()
    };
    let of_province = "unit_code = 'H44' AND period_kind = 'month'";
    let daily = history(&format!("SELECT day AS x, total AS y FROM daily_totals WHERE {of_province} ORDER BY day"));
    let weekly = history(&format!(
        "SELECT week_start AS x, total AS y FROM weekly_totals WHERE {of_province} ORDER BY week_start"
    ));
    let groups = history(&format!(
        "SELECT day AS x, points AS y FROM daily_group_scores WHERE {of_province} ORDER BY group_id, day"
    ));
    assert!(!daily.is_empty() && !weekly.is_empty() && groups.len() == 6 * daily.len(), "history kept: {daily:?}");
    let mut drawn = (Vec::new(), Vec::new(), Vec::new());
    let same = wait_for_quietly(Duration::from_secs(20), || {
        drawn = (points("trend-daily"), points("trend-weekly"), points("trend-groups"));
        (&drawn.0, &drawn.1, &drawn.2) == (&daily, &weekly, &groups)
    })
    .await;
    assert!(same, "the charts draw {drawn:?}\nbut the history holds {daily:?} {weekly:?} {groups:?}");

    let select = format!(
        "const s = document.querySelector('#period'); s.value = {past:?}; s.dispatchEvent(new Event('change')); return s.value"
    );
    assert_eq!(browser.execute(&select), json!(past), "{past} is offered by the period selector");
    let then = &sql(
        addr,
        &format!("SELECT total FROM totals WHERE depth = 0 AND period_kind = 'month' AND period = '{past}'"),
    )[0];
    let ranking = sql(addr, &format!("SELECT unit_code FROM totals WHERE depth = 1 AND period_kind = 'month' AND period = '{past}' ORDER BY rank, unit_name"));
    let expected =
        json!([lang.fixed(&then["total"]), ranking.iter().map(|r| r["unit_code"].clone()).collect::<Vec<_>>()]);
    let mut shown = Value::Null;
    let past_shown = wait_for_quietly(Duration::from_secs(20), || {
        let script = "return JSON.stringify([document.querySelector('#province-total').textContent.trim(), [...document.querySelectorAll('#ranking tbody tr')].map(r => r.dataset.unit)])";
        shown = serde_json::from_str(browser.execute(script).as_str().unwrap()).unwrap();
        shown == expected
    })
    .await;
    assert!(past_shown, "{past} on the wall: {shown} against SQL's {expected}");
}

/// The wall on a phone (390 × 844) and on a 4K display read across the room (3840 × 2160): no
/// sideways scrolling of the page on either (a wide table scrolls inside its panel), the
/// province's total drawn at least 40 and 90 pixels high, a screenshot of each; then back to the
/// test's size. Returns the screenshots.
pub async fn check_phone_and_4k(browser: &Browser) -> Vec<PathBuf> {
    let mut shots = Vec::new();
    for (name, width, height, total_px) in [("ioc-wall-phone", 390, 844, 40.0), ("ioc-wall-4k", 3840, 2160, 90.0)] {
        browser.resize(width, height).await;
        let seen = browser.execute(
            "const wide = [...document.querySelectorAll('section')].filter((s) => s.getBoundingClientRect().right > window.innerWidth + 1);
             return { page: document.documentElement.scrollWidth, window: window.innerWidth, wide: wide.map((s) => s.id),
                      total: document.querySelector('#province-total').getBoundingClientRect().height };",
        );
        assert!(seen["page"].as_u64() <= seen["window"].as_u64(), "{name}: the page scrolls sideways: {seen}");
        assert_eq!(seen["wide"], json!([]), "{name}: panels wider than the window: {seen}");
        assert!(
            seen["total"].as_f64().unwrap() >= total_px,
            "{name}: the province's total is too small to read: {seen}"
        );
        shots.push(browser.screenshot(name));
    }
    browser.resize(1600, 1300).await;
    shots
}
