//! The audit trail's files: each flush of the trail's newest lines is one Parquet file,
//! `audit/<day>/<unix ms>-<random>.parquet` (UTC day; the random part keeps replicas that share
//! a bucket from writing over each other). Days older than `keep_days` are removed as new files
//! are written.

use std::io;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use datafusion::arrow::array::RecordBatch;
use rand::RngCore;

use crate::persist::snapshot::{decode_parquet, encode_parquet};
use crate::persist::store::Store;

const FOLDER: &str = "audit";

#[derive(Debug, Clone)]
pub struct AuditFiles {
    store: Store,
    keep_days: u64,
}

impl AuditFiles {
    pub fn new(store: Store, keep_days: u64) -> AuditFiles {
        AuditFiles { store, keep_days }
    }

    /// Keeps `batch` (lines of one flush) as a file of the day `now` falls in.
    pub async fn write(&self, batch: &RecordBatch, now: DateTime<Utc>) -> io::Result<()> {
        let bytes = encode_parquet("audit_log", std::slice::from_ref(batch)).map_err(io::Error::other)?;
        let mut random = [0u8; 4];
        rand::rng().fill_bytes(&mut random);
        let name = format!("{}-{:08x}.parquet", now.timestamp_millis(), u32::from_be_bytes(random));
        self.store.put(&format!("{FOLDER}/{}/{name}", now.date_naive()), bytes).await?;
        for day in self.days().await? {
            if day < now.date_naive() - Duration::days(self.keep_days as i64) {
                self.store.remove_folder(&format!("{FOLDER}/{day}")).await?;
            }
        }
        Ok(())
    }

    /// Every line kept, oldest day first; a file that cannot be read is logged and skipped.
    pub async fn read(&self) -> io::Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for day in self.days().await? {
            for name in self.store.list(&format!("{FOLDER}/{day}")).await? {
                let path = format!("{FOLDER}/{day}/{name}");
                match decode_parquet(self.store.get(&path).await?) {
                    Ok(read) => batches.extend(read),
                    Err(why) => tracing::error!(path, %why, "audit file unreadable; skipped"),
                }
            }
        }
        Ok(batches)
    }

    async fn days(&self) -> io::Result<Vec<NaiveDate>> {
        let folders = self.store.list(FOLDER).await?;
        Ok(folders.iter().filter_map(|f| NaiveDate::parse_from_str(f, "%Y-%m-%d").ok()).collect())
    }
}
