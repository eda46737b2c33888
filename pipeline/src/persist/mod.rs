//! Persistence: the state as Parquet (`checkpoint`), written generation by generation as
//! verified `snapshot`s, and the score `history` by day and week, all in one `store` (a folder
//! or an S3-compatible bucket).

pub mod checkpoint;
pub mod history;
pub mod snapshot;
pub mod store;
