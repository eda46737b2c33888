//! Persistence: the state as Parquet (`checkpoint`), written generation by generation as
//! verified `snapshot`s, the score `history` by day and week, and the `audit_files` of who did
//! what, all in one `store` (a folder or an S3-compatible bucket).

pub mod audit_files;
pub mod checkpoint;
pub mod history;
pub mod snapshot;
pub mod store;
