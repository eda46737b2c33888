//! Parquet snapshots of the scores table: written to a staging file, synced, then renamed over
//! `scores.parquet`, so a reader always finds a whole file.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot folder {path}: {source} (check [snapshot] dir and its permissions)")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing Parquet {path}: {source}")]
    Parquet { path: PathBuf, source: datafusion::parquet::errors::ParquetError },
}

pub const SCORES_FILE: &str = "scores.parquet";

/// Writes `batch` as `dir/scores.parquet`, atomically; returns the path.
pub fn write_scores(dir: &Path, batch: &RecordBatch) -> Result<PathBuf, SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = dir.join(format!(".{SCORES_FILE}.tmp"));
    let target = dir.join(SCORES_FILE);
    let file = File::create(&staging).map_err(io(&staging))?;
    let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let parquet = |source| SnapshotError::Parquet { path: staging.clone(), source };
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    let file = writer.into_inner().map_err(parquet)?;
    file.sync_all().map_err(io(&staging))?;
    std::fs::rename(&staging, &target).map_err(io(&target))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn a_written_snapshot_reads_back_equal() {
        let registry =
            crate::units::Registry::parse("{\"code\":\"U1\",\"name\":\"Xã\",\"level\":\"commune\"}").unwrap();
        let mut state = crate::state::tests::state_at("2026-11-20T00:00:00+07:00");
        state.apply(&crate::state::tests::reception(
            "a",
            "D1",
            "2026-11-02T08:00:00+07:00",
            "2026-11-03T08:00:00+07:00",
        ));
        let view = crate::view::View::build(
            std::sync::Arc::new(registry),
            &crate::spec::tests::shipped(),
            80.0,
            &state,
            &Default::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = write_scores(dir.path(), view.table("scores")).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches, vec![view.table("scores").clone()]);
        assert!(!dir.path().join(format!(".{SCORES_FILE}.tmp")).exists());
    }
}
