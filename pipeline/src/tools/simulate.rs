//! A simulated province: its unit tree, its procedures, and a realistic stream of dossier
//! lifecycle events (out of order, now and then duplicated) for the demo, trials and load.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use index766_core::catalog::{Applicant, OnlineLevel, ProcedureRecord};
use index766_core::event::{status, Channel, Document, Fee, Feedback, ResultDocument, WireEvent, SCHEMA_VERSION};
use index766_core::petition::{Classification, PetitionEvent, Rating, Step};
use index766_core::time::{format_time, Instant, Period, PeriodKind};
use index766_core::units::{Level, Unit};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

const DEPARTMENTS: [&str; 20] = [
    "Văn phòng UBND tỉnh",
    "Sở Nội vụ",
    "Sở Tư pháp",
    "Sở Tài chính",
    "Sở Công Thương",
    "Sở Nông nghiệp và Môi trường",
    "Sở Xây dựng",
    "Sở Khoa học và Công nghệ",
    "Sở Giáo dục và Đào tạo",
    "Sở Y tế",
    "Sở Văn hóa, Thể thao và Du lịch",
    "Sở Dân tộc và Tôn giáo",
    "Thanh tra tỉnh",
    "Ban Quản lý các khu công nghiệp",
    "Công an tỉnh",
    "Bảo hiểm xã hội tỉnh",
    "Thuế tỉnh",
    "Sở Ngoại vụ",
    "Kho bạc Nhà nước khu vực",
    "Ban Quản lý dự án đầu tư xây dựng",
];

const PLACE_WORDS: [&str; 24] = [
    "An", "Bình", "Hòa", "Phú", "Thạnh", "Tân", "Long", "Phước", "Đông", "Tây", "Nam", "Bắc", "Thuận", "Lộc", "Hưng",
    "Xuân", "Mỹ", "Vĩnh", "Quang", "Trung", "Sơn", "Hải", "Thắng", "Minh",
];

/// A procedure as the simulation needs it.
#[derive(Debug, Clone)]
pub struct Procedure {
    pub code: String,
    /// Handled by communes (true) or by departments.
    pub communal: bool,
    /// Legal maximum processing time, days.
    pub days: i64,
    pub fee: u64,
    /// Whether its one-stop-shop system syncs the fee list to the portal (4.1): many do not,
    /// though their dossiers are paid online (the portal counted 56 procedures with synced fee
    /// data against 93 with an online payment).
    pub fee_list_synced: bool,
    pub online_share: f64,
    pub supplement_rate: f64,
    pub late_rate: f64,
}

#[derive(Debug, Clone)]
pub struct Province {
    pub units: Vec<Unit>,
    pub procedures: Vec<Procedure>,
}

impl Province {
    /// A province of 20 departments and 100 communes/wards, with the procedures they handle.
    pub fn new(code: &str, name: &str, seed: u64) -> Province {
        Province::sized(code, name, seed, 100)
    }

    /// A province of 20 departments and `communes` communes/wards. The procedures depend on the
    /// seed only: provinces made with one seed share one national catalog.
    pub(crate) fn sized(code: &str, name: &str, seed: u64, communes: usize) -> Province {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut units = vec![Unit {
            code: code.into(),
            name: name.into(),
            parent: None,
            level: Level::Province,
            certified_copies: false,
        }];
        for (i, dept) in DEPARTMENTS.iter().enumerate() {
            units.push(Unit {
                code: format!("{code}.{:02}", i + 1),
                name: (*dept).into(),
                parent: Some(code.into()),
                level: Level::Department,
                certified_copies: false,
            });
        }
        for i in 0..communes {
            let (a, b) = (PLACE_WORDS[i % 24], PLACE_WORDS[(i / 24 * 7 + i * 5 + 3) % 24]);
            let kind = if i % 4 == 0 { "Phường" } else { "Xã" };
            units.push(Unit {
                code: format!("{code}.{}", 100 + i),
                name: format!("{kind} {a} {b}"),
                parent: Some(code.into()),
                level: Level::Commune,
                certified_copies: i % 10 != 0,
            });
        }
        let mut procedures = Vec::new();
        for i in 0..40 {
            let communal = i < 12;
            let days = if communal {
                [1, 1, 2, 3, 3, 5, 5, 7][rng.random_range(0..8)]
            } else {
                [3, 5, 7, 10, 15, 20, 30][rng.random_range(0..7)]
            };
            procedures.push(Procedure {
                code: format!("1.{:06}", 1000 + i * 37),
                communal,
                days,
                fee: if rng.random_bool(0.45) {
                    [10_000, 20_000, 50_000, 100_000, 500_000][rng.random_range(0..5)]
                } else {
                    0
                },
                // By position, not drawn: the rest of the province stays as the seed made it.
                fee_list_synced: i % 5 < 3,
                online_share: rng.random_range(0.35..0.95),
                supplement_rate: rng.random_range(0.02..0.15),
                late_rate: rng.random_range(0.005..0.12),
            });
        }
        Province { units, procedures }
    }

    /// The procedures the department at registry position `dept` (1-20) handles: a few of its own.
    fn department_procedures(&self, dept: usize) -> Vec<&Procedure> {
        self.procedures.iter().filter(|p| !p.communal).skip((dept - 1) % 14 * 2).take(3).collect()
    }

    /// The procedure catalog as JSON lines (schemas/procedure.v1.schema.json): most procedures
    /// online, published on time, a few late or incomplete, as in a real province.
    pub fn catalog_jsonl(&self, now: Instant) -> String {
        let mut rng = StdRng::seed_from_u64(self.procedures.len() as u64);
        self.procedures
            .iter()
            .map(|p| {
                let issued = now - rng.random_range(5..300) * DAY;
                let public = issued + rng.random_range(1..10) * DAY;
                let record = ProcedureRecord {
                    code: p.code.clone(),
                    name: format!("Thủ tục {}", p.code),
                    online_level: if p.online_share > 0.5 {
                        OnlineLevel::Full
                    } else if p.online_share > 0.4 {
                        OnlineLevel::Partial
                    } else {
                        OnlineLevel::None
                    },
                    eligible_full_online: p.online_share > 0.5,
                    fee: p.fee,
                    needs_written_result: !p.communal || p.days > 2,
                    applicant_types: if p.communal {
                        vec![Applicant::Citizen]
                    } else {
                        vec![Applicant::Citizen, Applicant::Business]
                    },
                    max_processing_days: Some(p.days as u32),
                    levels: vec![if p.communal { Level::Commune } else { Level::Department }],
                    units: (1..=20)
                        .filter(|&d| !p.communal && self.department_procedures(d).iter().any(|q| q.code == p.code))
                        .map(|d| self.units[d].code.clone())
                        .collect(),
                    decision_issued_at: Some(format_time(issued)),
                    decision_due_at: Some(format_time(issued + if rng.random_bool(0.9) { DAY } else { -DAY })),
                    made_public_at: Some(format_time(public)),
                    public_due_at: Some(format_time(public + if rng.random_bool(0.85) { DAY } else { -DAY })),
                    record_complete: rng.random_bool(0.9),
                };
                serde_json::to_string(&record).expect("procedure serialises") + "\n"
            })
            .collect()
    }

    /// The unit registry as JSON lines (schemas/unit.v1.schema.json).
    pub fn registry_jsonl(&self) -> String {
        self.units.iter().map(|u| serde_json::to_string(u).expect("unit serialises") + "\n").collect()
    }
}

/// The local midnights of the `days` days before `now`, and of today.
fn history_days(now: Instant, days: i64) -> impl Iterator<Item = Instant> {
    let local_midnight = now - (now + index766_core::time::VIETNAM_OFFSET_SECS as i64).rem_euclid(DAY);
    (0..=days).map(move |d| local_midnight - (days - d) * DAY)
}

fn is_weekend(day: Instant) -> bool {
    let weekday = ((day + index766_core::time::VIETNAM_OFFSET_SECS as i64) / DAY + 4).rem_euclid(7); // 0 = Sunday
    weekday == 0 || weekday == 6
}

/// The 34 provinces and centrally run cities since mid-2025: name, a weight for their share of
/// the nation's dossiers (about their population, in hundred thousands) and about how many
/// communes and wards they have.
const PROVINCES: [(&str, u32, usize); 34] = [
    ("Thành phố Hà Nội", 86, 126),
    ("Thành phố Hồ Chí Minh", 140, 168),
    ("Thành phố Hải Phòng", 47, 114),
    ("Thành phố Đà Nẵng", 30, 94),
    ("Thành phố Cần Thơ", 42, 103),
    ("Thành phố Huế", 12, 40),
    ("Tỉnh Lai Châu", 5, 38),
    ("Tỉnh Điện Biên", 6, 45),
    ("Tỉnh Sơn La", 13, 75),
    ("Tỉnh Lạng Sơn", 8, 65),
    ("Tỉnh Quảng Ninh", 14, 54),
    ("Tỉnh Thanh Hóa", 38, 166),
    ("Tỉnh Nghệ An", 35, 130),
    ("Tỉnh Hà Tĩnh", 13, 69),
    ("Tỉnh Cao Bằng", 5, 56),
    ("Tỉnh Tuyên Quang", 19, 124),
    ("Tỉnh Lào Cai", 17, 99),
    ("Tỉnh Thái Nguyên", 18, 92),
    ("Tỉnh Phú Thọ", 40, 148),
    ("Tỉnh Bắc Ninh", 38, 99),
    ("Tỉnh Hưng Yên", 35, 104),
    ("Tỉnh Ninh Bình", 41, 129),
    ("Tỉnh Quảng Trị", 19, 78),
    ("Tỉnh Quảng Ngãi", 21, 96),
    ("Tỉnh Gia Lai", 34, 135),
    ("Tỉnh Khánh Hòa", 24, 65),
    ("Tỉnh Lâm Đồng", 39, 124),
    ("Tỉnh Đắk Lắk", 32, 102),
    ("Tỉnh Đồng Nai", 45, 95),
    ("Tỉnh Tây Ninh", 30, 96),
    ("Tỉnh Vĩnh Long", 43, 124),
    ("Tỉnh Đồng Tháp", 42, 102),
    ("Tỉnh Cà Mau", 26, 64),
    ("Tỉnh An Giang", 49, 102),
];

/// A simulated nation: up to 34 provinces (codes `H01`…), each with its own unit tree and
/// dossiers, sharing one national procedure catalog; reproducible from a seed.
pub(crate) struct Nation {
    provinces: Vec<(Simulator, u32)>,
}

impl Nation {
    pub fn new(provinces: usize, seed: u64) -> Nation {
        let provinces = PROVINCES
            .iter()
            .take(provinces.clamp(1, PROVINCES.len()))
            .enumerate()
            .map(|(i, &(name, weight, communes))| {
                let province = Province::sized(&format!("H{:02}", i + 1), name, seed, communes);
                (Simulator::new(province, seed.wrapping_add(1 + i as u64)), weight)
            })
            .collect();
        Nation { provinces }
    }

    /// Every province's units, as one registry (one root per province).
    pub fn registry_jsonl(&self) -> String {
        self.provinces.iter().map(|(sim, _)| sim.province().registry_jsonl()).collect()
    }

    /// The national catalog (every province handles the same procedures).
    pub fn catalog_jsonl(&self, now: Instant) -> String {
        self.provinces[0].0.province().catalog_jsonl(now)
    }

    /// About `dossiers` dossiers received over the `days` days before `now`, split between the
    /// provinces by weight, streamed a day at a time: `emit` gets, day after day, every event that
    /// has happened by the end of that day (or by `now`), shuffled locally with a few duplicates.
    /// Memory stays bounded by the dossiers still open, not by the whole history. Returns how many
    /// events were emitted.
    pub fn history<E>(
        &mut self,
        now: Instant,
        days: i64,
        dossiers: u64,
        mut emit: impl FnMut(Vec<WireEvent>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let working_days: f64 = history_days(now, days).map(|d| if is_weekend(d) { 0.2 } else { 1.0 }).sum();
        let total_weight: u32 = self.provinces.iter().map(|(_, w)| w).sum();
        let mut emitted = 0;
        for day in history_days(now, days) {
            let mut events = Vec::new();
            for (sim, weight) in &mut self.provinces {
                let per_day = (dossiers as f64 * *weight as f64 / total_weight as f64 / working_days).round() as u32;
                sim.receive_day(day, per_day, now);
                events.extend(sim.due_events((day + DAY - 1).min(now)));
            }
            emitted += events.len() as u64;
            emit(events)?;
        }
        Ok(emitted)
    }
}

/// Generates dossiers and their events; events later than "now" wait until their time comes.
pub struct Simulator {
    province: Province,
    rng: StdRng,
    next_dossier: u64,
    /// Future events, earliest first (ties broken by creation order).
    pending: BinaryHeap<Reverse<(Instant, u64, WireEventOrd)>>,
    next_seq: u64,
    /// A unit whose one-stop desk fails from an instant on (`fail_desk`).
    broken_desk: Option<(String, Instant)>,
}

/// WireEvent has no order of its own; the heap orders by (time, sequence) only.
#[derive(Debug)]
struct WireEventOrd(WireEvent);

impl PartialEq for WireEventOrd {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for WireEventOrd {}
impl PartialOrd for WireEventOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WireEventOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Share of events sent twice, and how far events are shuffled, as real one-stop systems do.
const DUPLICATE_RATE: f64 = 0.005;
const SHUFFLE_WINDOW: usize = 64;

impl Simulator {
    pub fn new(province: Province, seed: u64) -> Simulator {
        Simulator {
            province,
            rng: StdRng::seed_from_u64(seed),
            next_dossier: 0,
            pending: BinaryHeap::new(),
            next_seq: 0,
            broken_desk: None,
        }
    }

    pub fn province(&self) -> &Province {
        &self.province
    }

    /// Dossiers received over the `days` days before `now` (about `per_day` a working day, fewer at
    /// weekends); returns the events that have already happened, roughly in time order but shuffled
    /// locally and with a few duplicates. Later events are kept for [`Simulator::due_events`].
    pub fn history(&mut self, now: Instant, days: i64, per_day: u32) -> Vec<WireEvent> {
        for day in history_days(now, days) {
            self.receive_day(day, per_day, now);
        }
        self.due_events(now)
    }

    /// At `at` the one-stop desk of department `unit_code` fails, as IOCs meet it: that morning it
    /// enters `backlog` paper dossiers it had held back since the start of the month (received on
    /// working days before `at`, many already past due), and from then on every dossier it
    /// receives, like the backlog, is handled late, neither synced to the national portal nor
    /// digitised, with its result on paper only.
    pub(crate) fn fail_desk(&mut self, unit_code: &str, at: Instant, backlog: u32) -> Result<(), String> {
        let Some(unit) = self.province.units.iter().position(|u| u.code == unit_code && u.level == Level::Department)
        else {
            let departments = self.province.units.iter().filter(|u| u.level == Level::Department);
            let codes: Vec<&str> = departments.map(|u| u.code.as_str()).collect();
            return Err(format!("{unit_code} is not a department of the simulated province ({})", codes.join(", ")));
        };
        self.broken_desk = Some((unit_code.to_owned(), at));
        let since = Period::containing(PeriodKind::Month, at).start();
        for _ in 0..backlog {
            let received = loop {
                let t = self.rng.random_range(since..at);
                if !is_weekend(t) {
                    break t;
                }
            };
            self.dossier_at(received, unit, Some(at));
        }
        Ok(())
    }

    /// The dossiers received on the local day starting at `day` (midnight), up to `now`: `per_day`
    /// on a working day, a fifth of that at weekends, in office hours.
    pub(crate) fn receive_day(&mut self, day: Instant, per_day: u32, now: Instant) {
        let count = if is_weekend(day) { per_day / 5 } else { per_day };
        for _ in 0..count {
            let received = day + 7 * HOUR + 30 * 60 + self.rng.random_range(0..(9 * HOUR + 30 * 60));
            if received <= now {
                self.dossier(received);
            }
        }
    }

    /// Petitions over the `days` days before `now` (about one per 150 dossiers), every event that
    /// has already happened: most answered and published in time, some transferred, rejected,
    /// late, repeated or rated unsatisfied.
    pub fn petition_history(&mut self, now: Instant, days: i64, per_day: u32) -> Vec<PetitionEvent> {
        let rng = &mut self.rng;
        let units = &self.province.units;
        let mut out = Vec::new();
        for n in 0..(days * per_day as i64 / 150) {
            let id = format!("PA-{:06}", n + 1);
            let mut unit = units[1 + rng.random_range(0..units.len() - 1)].code.clone();
            let submitted = now - rng.random_range(0..days * DAY);
            let mut seq = 0;
            let mut push = |step: Step, t: Instant, unit: &str, edit: &dyn Fn(&mut PetitionEvent)| {
                seq += 1;
                let mut e = PetitionEvent {
                    schema_version: 1,
                    event_id: format!("{id}#{seq}"),
                    event_time: format_time(t),
                    petition_id: id.clone(),
                    unit_code: unit.into(),
                    step,
                    classification: None,
                    rating: None,
                    repeated: false,
                };
                edit(&mut e);
                if t <= now {
                    out.push(e);
                }
            };
            let repeated = rng.random_bool(0.05);
            push(Step::Submitted, submitted, &unit, &|e| e.repeated = repeated);
            let mut t = submitted + rng.random_range(HOUR..2 * DAY);
            if rng.random_bool(0.1) {
                unit = units[1 + rng.random_range(0..units.len() - 1)].code.clone();
                push(Step::Transferred, t, &unit, &|_| {});
                t += rng.random_range(HOUR..DAY);
            }
            let classification = if rng.random_bool(0.7) { Classification::Rules } else { Classification::Officials };
            let classified = rng.random_bool(0.85);
            if rng.random_bool(0.08) {
                push(Step::Rejected, t + rng.random_range(0..3 * DAY), &unit, &|_| {});
                continue;
            }
            push(Step::InfoRequested, t, &unit, &|e| e.classification = classified.then_some(classification));
            let longest = if rng.random_bool(0.1) { 30 * DAY } else { 18 * DAY };
            let answered = t + rng.random_range(3 * DAY..longest);
            push(Step::Answered, answered, &unit, &|_| {});
            if rng.random_bool(0.9) {
                push(Step::Published, answered + rng.random_range(HOUR..4 * DAY), &unit, &|_| {});
            }
            if rng.random_bool(0.3) {
                let rating = if rng.random_bool(0.25) { Rating::Unsatisfied } else { Rating::Satisfied };
                push(Step::Rated, answered + rng.random_range(DAY..6 * DAY), &unit, &|e| e.rating = Some(rating));
            }
        }
        out
    }

    /// New dossiers received at `now`, for live mode.
    pub(crate) fn receive_now(&mut self, now: Instant, count: u32) {
        for _ in 0..count {
            self.dossier(now);
        }
    }

    /// Every pending event whose time has come, shuffled locally and with a few duplicates.
    pub(crate) fn due_events(&mut self, now: Instant) -> Vec<WireEvent> {
        let mut out = Vec::new();
        while let Some(Reverse((t, _, _))) = self.pending.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, _, WireEventOrd(event))) = self.pending.pop().expect("peeked");
            if self.rng.random_bool(DUPLICATE_RATE) {
                out.push(event.clone());
            }
            out.push(event);
        }
        for window in out.chunks_mut(SHUFFLE_WINDOW) {
            window.shuffle(&mut self.rng);
        }
        out
    }

    fn schedule(&mut self, event: WireEvent, at: Instant) {
        self.next_seq += 1;
        self.pending.push(Reverse((at, self.next_seq, WireEventOrd(event))));
    }

    /// One dossier's whole lifecycle, scheduled, at a unit drawn as the province's dossiers fall.
    fn dossier(&mut self, received: Instant) {
        let communal = self.rng.random_bool(0.6);
        let unit = if communal {
            21 + self.rng.random_range(0..self.province.units.len() - 21)
        } else {
            1 + self.rng.random_range(0..20)
        };
        self.dossier_at(received, unit, None);
    }

    /// One dossier's whole lifecycle at `units[unit_index]`; if it was `entered` on the system only
    /// later than it happened, its events up to then all arrive at that instant.
    fn dossier_at(&mut self, received: Instant, unit_index: usize, entered: Option<Instant>) {
        let rng = &mut self.rng;
        let unit = &self.province.units[unit_index];
        let candidates: Vec<&Procedure> = if unit.level == Level::Commune {
            self.province.procedures.iter().filter(|p| p.communal).collect()
        } else {
            self.province.department_procedures(unit_index)
        };
        let procedure = candidates[rng.random_range(0..candidates.len())].clone();
        let unit_code = unit.code.clone();
        self.next_dossier += 1;
        let dossier_id =
            format!("{unit_code}-{}-{:06}", &format_time(received)[2..10].replace('-', ""), self.next_dossier);

        let channel = if rng.random_bool(procedure.online_share) {
            Channel::Online
        } else if rng.random_bool(0.02) {
            Channel::Postal
        } else {
            Channel::Direct
        };
        let broken = entered.is_some()
            || self.broken_desk.as_ref().is_some_and(|(code, from)| *code == unit.code && received >= *from);
        let synced = rng.random_bool(0.93) && !broken;
        let digitised = rng.random_bool(0.78) && !broken;
        let reused = rng.random_bool(0.35);
        let vneid = channel == Channel::Online && rng.random_bool(0.7);
        let due = received + procedure.days * DAY;

        let mut seq = 0;
        let mut events: Vec<(Instant, WireEvent)> = Vec::new();
        let mut push = |t: Instant, status: u8, edit: &dyn Fn(&mut WireEvent)| {
            seq += 1;
            let mut e = WireEvent {
                schema_version: SCHEMA_VERSION,
                event_id: format!("{dossier_id}#{seq}"),
                event_time: format_time(t),
                dossier_id: dossier_id.clone(),
                status,
                unit_code: unit_code.clone(),
                procedure_code: procedure.code.clone(),
                channel,
                due_at: None,
                supplement_received: false,
                fees: vec![],
                paid_online: 0,
                documents: vec![],
                result: None,
                vneid_authenticated: vneid,
                population_data_used: vneid,
                synced_to_portal: synced,
                feedback: None,
            };
            edit(&mut e);
            events.push((t, e));
        };

        if channel == Channel::Online {
            push(received - rng.random_range(10 * 60..6 * HOUR), status::SUBMITTED_ONLINE, &|_| {});
        }
        push(received, status::RECEIVED, &|e| {
            e.due_at = Some(format_time(due));
            e.documents =
                vec![Document { code: "TP1".into(), digitised, reused, from_personal_store: reused && vneid }];
        });
        push(
            received + rng.random_range(HOUR..DAY.min(procedure.days * DAY / 2).max(HOUR + 1)),
            status::PROCESSING,
            &|_| {},
        );

        // Supplement requests stop the clock while the applicant gathers documents.
        let mut due_eff = due;
        let mut waiting = false;
        if rng.random_bool(procedure.supplement_rate) {
            let requested = received + rng.random_range(HOUR..(due - received).max(2 * HOUR) / 2);
            push(requested, status::SUPPLEMENT_REQUESTED, &|_| {});
            if rng.random_bool(0.9) {
                let arrived = requested + rng.random_range(DAY..5 * DAY);
                push(arrived, status::PROCESSING, &|e| e.supplement_received = true);
                due_eff += arrived - requested;
                if rng.random_bool(0.05) {
                    push(arrived + rng.random_range(HOUR..DAY), status::SUPPLEMENT_REQUESTED, &|_| {});
                    waiting = true;
                }
            } else {
                waiting = true;
            }
        }
        if !waiting {
            let span = (due_eff - received) as f64;
            let roll: f64 = rng.random();
            if roll < 0.015 {
                push(received + (span * rng.random_range(0.1..0.8)) as i64, status::WITHDRAWN, &|_| {});
            } else if roll < 0.025 {
                push(received + (span * rng.random_range(0.2..0.9)) as i64, status::STOPPED, &|_| {});
            } else {
                let late = rng.random_bool(procedure.late_rate) || broken;
                let f = if late { rng.random_range(1.05..1.8) } else { rng.random_range(0.15..0.97) };
                let completed = received + (span * f) as i64;
                if procedure.fee > 0 {
                    let paid_online = if channel == Channel::Online && rng.random_bool(0.75) {
                        1 + rng.random_range(0..2)
                    } else {
                        0
                    };
                    let (fee, synced) = (procedure.fee, procedure.fee_list_synced);
                    push(received + (span * f * 0.5) as i64, status::FEES_REQUESTED, &|e| {
                        e.paid_online = paid_online;
                        if synced {
                            e.fees = vec![Fee { amount: fee, paid_online: 0 }];
                        }
                    });
                }
                push(completed, status::COMPLETED, &|_| {});
                let returned = completed + rng.random_range(10 * 60..2 * DAY);
                let electronic = rng.random_bool(0.8) && !broken;
                let to_store = electronic && vneid && rng.random_bool(0.5);
                push(returned, status::RESULT_RETURNED, &|e| {
                    e.result = Some(ResultDocument {
                        file_url: electronic.then(|| format!("https://dvc.example.gov.vn/kq/{}.pdf", e.dossier_id)),
                        synced_to_personal_store: to_store,
                    })
                });
                if rng.random_bool(0.01) {
                    let complaint = rng.random_bool(0.2);
                    push(returned + rng.random_range(DAY..10 * DAY), status::RESULT_RETURNED, &|e| {
                        e.feedback = Some(Feedback { dislike: !complaint, complaint })
                    });
                }
            }
        }
        for (t, e) in events {
            self.schedule(e, entered.map_or(t, |entered| t.max(entered)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_province_registry_is_a_valid_tree() {
        let province = Province::new("H99", "Tỉnh Mô Phỏng", 7);
        let registry = index766_core::units::Registry::parse(&province.registry_jsonl()).unwrap();
        assert_eq!(registry.len(), 121);
    }

    #[test]
    fn history_decodes_and_is_reproducible_from_a_seed() {
        let now = index766_core::time::parse_time("2026-11-24T12:00:00+07:00").unwrap();
        let run = || Simulator::new(Province::new("H99", "Tỉnh", 7), 42).history(now, 10, 200);
        let events = run();
        assert_eq!(events, run());
        assert!(events.len() > 5_000, "{} events", events.len());
        for e in &events {
            let bytes = serde_json::to_vec(e).unwrap();
            let decoded = index766_core::event::decode(&bytes, Some(e.dossier_id.as_bytes()), 65536).unwrap();
            assert!(decoded.event_time <= now);
        }
        let mut state = index766_core::state::State::new(now, Default::default());
        for e in &events {
            state.apply(&index766_core::event::decode(&serde_json::to_vec(e).unwrap(), None, 65536).unwrap());
        }
        // A realistic province: most dossiers on time, some overdue.
        let (received, on_time) = state
            .tallies()
            .iter()
            .filter(|((_, p), _)| p.kind == PeriodKind::Year)
            .map(|(_, t)| t.of("2.1"))
            .fold((0, 0), |(r, o), t| (r + t.den, o + t.num));
        let share = on_time as f64 / received as f64;
        assert!((0.80..0.99).contains(&share), "on-time share {share}");
    }
}
