//! The dossier lifecycle event contract, version 1 (`schemas/dossier-event.v1.schema.json`):
//! the wire form, its validation, and the decoded form the state applies.

use serde::{Deserialize, Serialize};

use crate::time::{parse_time, Instant};

pub const SCHEMA_VERSION: u32 = 1;

/// National dossier status codes (TrangThaiHoSo).
pub mod status {
    pub const SUBMITTED_ONLINE: u8 = 1;
    pub const RECEIVED: u8 = 2;
    pub const REFUSED_AT_RECEPTION: u8 = 3;
    pub const PROCESSING: u8 = 4;
    pub const SUPPLEMENT_REQUESTED: u8 = 5;
    pub const FEES_REQUESTED: u8 = 6;
    pub const WITHDRAWN: u8 = 7;
    pub const STOPPED: u8 = 8;
    pub const COMPLETED: u8 = 9;
    pub const RESULT_RETURNED: u8 = 10;
}

/// Submission channel (KenhThucHien).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Channel {
    Direct = 1,
    Online = 2,
    Postal = 3,
}

impl TryFrom<u8> for Channel {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Channel::Direct),
            2 => Ok(Channel::Online),
            3 => Ok(Channel::Postal),
            _ => Err(format!("channel must be 1 (direct), 2 (online) or 3 (postal), not {v}")),
        }
    }
}

impl From<Channel> for u8 {
    fn from(c: Channel) -> u8 {
        c as u8
    }
}

/// One event as it travels on the topic (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub schema_version: u32,
    pub event_id: String,
    pub event_time: String,
    pub dossier_id: String,
    pub status: u8,
    pub unit_code: String,
    pub procedure_code: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supplement_received: bool,
    /// The fee list synced to the portal (DanhSachLePhi): the fee data 4.1 counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fees: Vec<Fee>,
    /// Paid online (DuocThanhToanTrucTuyen), a fact of its own: 1 on DVCQG, 2 on the province's
    /// payment portal, whether or not the fee list was synced. A v1 addition: events without it
    /// decode as before (a `fees[]` entry's own `paid_online` still counts).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paid_online: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultDocument>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vneid_authenticated: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub population_data_used: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synced_to_portal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    /// Amount in VND; 0 means the procedure charges nothing.
    pub amount: u64,
    /// 0 not paid online, 1 paid on DVCQG, 2 paid on the province's payment portal.
    #[serde(default)]
    pub paid_online: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub code: String,
    #[serde(default)]
    pub digitised: bool,
    #[serde(default)]
    pub reused: bool,
    #[serde(default)]
    pub from_personal_store: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    #[serde(default)]
    pub synced_to_personal_store: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    #[serde(default)]
    pub dislike: bool,
    #[serde(default)]
    pub complaint: bool,
}

/// Facts about a dossier that, once true, stay true whatever order events arrive in.
pub mod flag {
    pub const SYNCED_TO_PORTAL: u16 = 1 << 0;
    /// Fee data synced: a `fees[]` entry with an amount.
    pub const HAS_FEE: u16 = 1 << 1;
    /// Paid online, with or without synced fee data; either makes a dossier fee-bearing.
    pub const PAID_ONLINE: u16 = 1 << 2;
    pub const ELECTRONIC_RESULT: u16 = 1 << 3;
    pub const DIGITISED: u16 = 1 << 4;
    pub const REUSED_DATA: u16 = 1 << 5;
    pub const PERSONAL_STORE: u16 = 1 << 6;
    pub const VNEID: u16 = 1 << 7;
    pub const POPULATION_DATA: u16 = 1 << 8;
    pub const DISLIKED: u16 = 1 << 9;
    pub const COMPLAINED: u16 = 1 << 10;
}

/// A validated event, times parsed, ready for the state.
#[derive(Debug, Clone, PartialEq)]
pub struct DossierEvent {
    pub event_id: String,
    pub event_time: Instant,
    pub dossier_id: String,
    pub status: u8,
    pub unit_code: String,
    pub procedure_code: String,
    pub channel: Channel,
    pub due_at: Option<Instant>,
    pub supplement_received: bool,
    pub flags: u16,
}

/// Why an event was refused: a bounded set, used as a metric label and a dead-letter header.
/// The first five are found by decoding one message; the others need the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Oversized,
    MalformedJson,
    SchemaViolation,
    UnsupportedVersion,
    KeyMismatch,
    /// Its event id was already applied to its dossier or petition.
    Duplicate,
    /// Its time is further ahead of the judging clock than `[ingest] max_future_secs`.
    FutureTimestamp,
    /// The dossier would end before it began (see `State::impossible`).
    ImpossibleTransition,
    /// Kept: the unit is not in the registry (yet); its events count once it is.
    UnknownUnit,
    /// Kept: the procedure is not in the catalog (yet).
    UnknownProcedure,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        RejectReason::Oversized,
        RejectReason::MalformedJson,
        RejectReason::SchemaViolation,
        RejectReason::UnsupportedVersion,
        RejectReason::KeyMismatch,
        RejectReason::Duplicate,
        RejectReason::FutureTimestamp,
        RejectReason::ImpossibleTransition,
        RejectReason::UnknownUnit,
        RejectReason::UnknownProcedure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::SchemaViolation => "schema_violation",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::KeyMismatch => "key_mismatch",
            RejectReason::Duplicate => "duplicate",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::ImpossibleTransition => "impossible_transition",
            RejectReason::UnknownUnit => "unknown_unit",
            RejectReason::UnknownProcedure => "unknown_procedure",
        }
    }

    /// Whether the event is still applied (and the dead letter is a notice), or dropped.
    pub fn is_kept(self) -> bool {
        matches!(self, RejectReason::UnknownUnit | RejectReason::UnknownProcedure)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

pub fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection { reason, detail: detail.into() }
}

const MAX_ID_LEN: usize = 128;

/// Decodes and validates one message. `key` is the Kafka message key, which must be the
/// dossier id when present (the contract keys events by dossier so they stay in order per dossier).
pub fn decode(payload: &[u8], key: Option<&[u8]>, max_bytes: usize) -> Result<DossierEvent, Rejection> {
    if payload.len() > max_bytes {
        return Err(reject(RejectReason::Oversized, format!("{} bytes, the limit is {max_bytes}", payload.len())));
    }
    // One parse on the hot path; only a message that fails it is parsed again, to say why.
    let wire: WireEvent = serde_json::from_slice(payload).map_err(|e| classify(payload, e))?;
    if wire.schema_version != SCHEMA_VERSION {
        return Err(unsupported(wire.schema_version as u64));
    }
    let event = validate(wire)?;
    if let Some(key) = key {
        if key != event.dossier_id.as_bytes() {
            return Err(reject(
                RejectReason::KeyMismatch,
                format!("message key {:?} is not the dossier id {:?}", String::from_utf8_lossy(key), event.dossier_id),
            ));
        }
    }
    Ok(event)
}

fn unsupported(version: u64) -> Rejection {
    reject(RejectReason::UnsupportedVersion, format!("schema_version {version}; this build reads {SCHEMA_VERSION}"))
}

/// Why a message did not decode: not JSON, another contract version, or a v1 schema violation.
fn classify(payload: &[u8], error: serde_json::Error) -> Rejection {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(e) => return reject(RejectReason::MalformedJson, e.to_string()),
    };
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v != SCHEMA_VERSION as u64 => unsupported(v),
        Some(_) => reject(RejectReason::SchemaViolation, error.to_string()),
        None => reject(RejectReason::SchemaViolation, "schema_version is missing or not a number"),
    }
}

fn validate(wire: WireEvent) -> Result<DossierEvent, Rejection> {
    let violation = |detail: String| reject(RejectReason::SchemaViolation, detail);
    for (name, value) in [
        ("event_id", &wire.event_id),
        ("dossier_id", &wire.dossier_id),
        ("unit_code", &wire.unit_code),
        ("procedure_code", &wire.procedure_code),
    ] {
        if value.is_empty() || value.len() > MAX_ID_LEN {
            return Err(violation(format!("{name} must have 1 to {MAX_ID_LEN} characters")));
        }
    }
    if !(1..=10).contains(&wire.status) {
        return Err(violation(format!("status must be a national status code 1-10, not {}", wire.status)));
    }
    let event_time = parse_time(&wire.event_time)
        .map_err(|e| violation(format!("event_time {:?} is not RFC 3339 with offset: {e}", wire.event_time)))?;
    let due_at = match (&wire.due_at, wire.status) {
        (Some(text), status::RECEIVED) => {
            Some(parse_time(text).map_err(|e| violation(format!("due_at {text:?} is not RFC 3339 with offset: {e}")))?)
        }
        (Some(_), other) => {
            return Err(violation(format!("due_at is set at reception (status 2) only, found on status {other}")))
        }
        (None, _) => None,
    };
    if wire.supplement_received && wire.status != status::PROCESSING {
        return Err(violation(format!(
            "supplement_received marks the return to processing (status 4), found on status {}",
            wire.status
        )));
    }
    if let Some(fee) = wire.fees.iter().find(|f| f.paid_online > 2) {
        return Err(violation(format!("fees[].paid_online must be 0, 1 or 2, not {}", fee.paid_online)));
    }
    if wire.paid_online > 2 {
        return Err(violation(format!("paid_online must be 0, 1 or 2, not {}", wire.paid_online)));
    }
    Ok(DossierEvent {
        flags: flags_of(&wire),
        event_id: wire.event_id,
        event_time,
        dossier_id: wire.dossier_id,
        status: wire.status,
        unit_code: wire.unit_code,
        procedure_code: wire.procedure_code,
        channel: wire.channel,
        due_at,
        supplement_received: wire.supplement_received,
    })
}

fn flags_of(wire: &WireEvent) -> u16 {
    let mut flags = 0;
    let mut set = |on: bool, bit: u16| {
        if on {
            flags |= bit
        }
    };
    set(wire.synced_to_portal, flag::SYNCED_TO_PORTAL);
    set(wire.fees.iter().any(|f| f.amount > 0), flag::HAS_FEE);
    set(wire.paid_online > 0 || wire.fees.iter().any(|f| f.amount > 0 && f.paid_online > 0), flag::PAID_ONLINE);
    set(wire.documents.iter().any(|d| d.digitised), flag::DIGITISED);
    set(wire.documents.iter().any(|d| d.reused), flag::REUSED_DATA);
    let result = wire.result.as_ref();
    set(result.is_some_and(|r| r.file_url.as_deref().is_some_and(|u| !u.is_empty())), flag::ELECTRONIC_RESULT);
    set(
        wire.documents.iter().any(|d| d.from_personal_store) || result.is_some_and(|r| r.synced_to_personal_store),
        flag::PERSONAL_STORE,
    );
    set(wire.vneid_authenticated, flag::VNEID);
    set(wire.population_data_used, flag::POPULATION_DATA);
    let feedback = wire.feedback.as_ref();
    set(feedback.is_some_and(|f| f.dislike), flag::DISLIKED);
    set(feedback.is_some_and(|f| f.complaint), flag::COMPLAINED);
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "event_id": "e-1",
            "event_time": "2026-11-03T08:15:00+07:00",
            "dossier_id": "H44.01-261103-0001",
            "status": 2,
            "unit_code": "H44.01",
            "procedure_code": "1.001234",
            "channel": 2,
            "due_at": "2026-11-10T17:00:00+07:00",
            "synced_to_portal": true,
            "documents": [{"code": "TP1", "digitised": true, "reused": false}],
            "fees": [{"amount": 50000, "paid_online": 1}]
        })
    }

    fn decode_value(v: &serde_json::Value) -> Result<DossierEvent, Rejection> {
        decode(v.to_string().as_bytes(), None, 65536)
    }

    #[test]
    fn decodes_a_reception_event() {
        let e = decode_value(&received()).unwrap();
        assert_eq!(e.status, status::RECEIVED);
        assert_eq!(e.event_time, parse_time("2026-11-03T01:15:00Z").unwrap());
        assert_eq!(e.due_at, Some(parse_time("2026-11-10T10:00:00Z").unwrap()));
        assert_eq!(e.channel, Channel::Online);
        assert_eq!(e.flags, flag::SYNCED_TO_PORTAL | flag::DIGITISED | flag::HAS_FEE | flag::PAID_ONLINE);
    }

    #[test]
    fn paid_online_without_synced_fee_data_is_a_fact_of_its_own() {
        let mut v = received();
        v.as_object_mut().unwrap().remove("fees");
        v["paid_online"] = 2.into();
        let e = decode_value(&v).unwrap();
        assert_eq!(e.flags & (flag::HAS_FEE | flag::PAID_ONLINE), flag::PAID_ONLINE, "paid, no fee data synced");
        v["paid_online"] = 3.into();
        let refused = decode_value(&v).unwrap_err();
        assert_eq!(refused.reason, RejectReason::SchemaViolation);
        assert!(refused.detail.contains("paid_online must be 0, 1 or 2"), "{}", refused.detail);
    }

    fn rejection(v: serde_json::Value) -> RejectReason {
        decode_value(&v).unwrap_err().reason
    }

    #[test]
    fn each_kind_of_bad_input_has_its_reason() {
        assert_eq!(decode(b"{not json", None, 100).unwrap_err().reason, RejectReason::MalformedJson);
        assert_eq!(decode(&[b' '; 200], None, 100).unwrap_err().reason, RejectReason::Oversized);
        let mut v = received();
        v["schema_version"] = 2.into();
        assert_eq!(rejection(v), RejectReason::UnsupportedVersion);
        let mut v = received();
        v["status"] = 11.into();
        assert_eq!(rejection(v), RejectReason::SchemaViolation);
        let mut v = received();
        v["event_time"] = "2026-11-03T08:15:00".into();
        assert_eq!(rejection(v), RejectReason::SchemaViolation);
        let mut v = received();
        v["channel"] = 4.into();
        assert_eq!(rejection(v), RejectReason::SchemaViolation);
        let mut v = received();
        v["colour"] = "blue".into();
        assert_eq!(rejection(v), RejectReason::SchemaViolation);
        let mut v = received();
        v["status"] = 9.into();
        assert_eq!(rejection(v), RejectReason::SchemaViolation, "due_at outside reception");
        let err = decode(received().to_string().as_bytes(), Some(b"other"), 65536).unwrap_err();
        assert_eq!(err.reason, RejectReason::KeyMismatch);
    }

    #[test]
    fn wire_form_round_trips() {
        let wire: WireEvent = serde_json::from_value(received()).unwrap();
        let again: WireEvent = serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap();
        assert_eq!(wire, again);
    }
}
