//! Where snapshots and history live: a local folder, written with the care a crash demands
//! (staging → fsync → rename → fsync of the folder), so a reader only ever finds whole files; or
//! an S3-compatible object store (`object_store`), whose puts are atomic per object, so replicas
//! on Kubernetes can share history. Paths are relative and `/`-separated.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, Clone)]
pub enum Store {
    Local(PathBuf),
    Object { url: String, store: Arc<dyn ObjectStore>, prefix: ObjectPath },
}

/// Folders being written start with this; a reader never lists them.
const STAGING: &str = ".staging-";

fn object_error(error: object_store::Error) -> io::Error {
    match error {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, error),
        other => io::Error::other(other),
    }
}

/// A `[snapshot] url` (with its options) that names no store this build can open.
#[derive(Debug, thiserror::Error)]
#[error("[snapshot] url = {url:?}{with_options}: {reason} (set [snapshot] url to s3://bucket/prefix, or leave it empty for [snapshot] dir)")]
pub struct StoreError {
    url: String,
    with_options: &'static str,
    reason: String,
}

impl Store {
    /// The local folder `dir`, or the object store at `url` (e.g. `s3://bucket/prefix`) with
    /// `object_store` options (aws_endpoint, aws_region, aws_access_key_id, …) when `url` is set.
    pub fn open(dir: &Path, url: &str, options: &BTreeMap<String, String>) -> Result<Store, StoreError> {
        if url.is_empty() {
            return Ok(Store::Local(dir.to_owned()));
        }
        let error = |with_options, reason: String| StoreError { url: url.to_owned(), with_options, reason };
        let parsed = url::Url::parse(url).map_err(|e| error("", e.to_string()))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options)
            .map_err(|e| error(" with [snapshot.options]", e.to_string()))?;
        Ok(Store::Object { url: url.to_owned(), store: Arc::from(store), prefix })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Local(root) => root.display().to_string(),
            Store::Object { url, .. } => url.clone(),
        }
    }

    fn object_path(prefix: &ObjectPath, path: &str) -> ObjectPath {
        path.split('/').filter(|p| !p.is_empty()).fold(prefix.clone(), |acc, part| acc.clone().join(part))
    }

    /// Writes `files` into the new folder `folder`, all or nothing: a crash leaves either no
    /// folder or the whole folder.
    pub(crate) async fn put_folder(&self, folder: &str, files: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        match self {
            Store::Local(root) => {
                let (root, folder) = (root.clone(), folder.to_owned());
                blocking(move || local_put_folder(&root, &folder, &files)).await
            }
            // Each object appears whole; the folder counts only once its manifest is written.
            Store::Object { .. } => {
                for (name, bytes) in files {
                    self.put(&format!("{folder}/{name}"), bytes).await?;
                }
                Ok(())
            }
        }
    }

    /// Writes one file atomically and durably, replacing any file of that name.
    pub(crate) async fn put(&self, path: &str, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Store::Local(root) => {
                let path = root.join(path);
                blocking(move || local_put(&path, &bytes)).await
            }
            Store::Object { store, prefix, .. } => {
                store.put(&Self::object_path(prefix, path), PutPayload::from(bytes)).await.map_err(object_error)?;
                Ok(())
            }
        }
    }

    /// A JSON file kept in the store (a log), None when there is none yet.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &'static str,
    ) -> Result<Option<T>, KeptJsonError> {
        match self.get(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| KeptJsonError::NotJson {
                path,
                store: self.describe(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeptJsonError::Store { path, store: self.describe(), source }),
        }
    }

    pub async fn get(&self, path: &str) -> io::Result<Bytes> {
        match self {
            Store::Local(root) => {
                let path = root.join(path);
                blocking(move || std::fs::read(path).map(Bytes::from)).await
            }
            Store::Object { store, prefix, .. } => {
                let found = store.get(&Self::object_path(prefix, path)).await.map_err(object_error)?;
                found.bytes().await.map_err(object_error)
            }
        }
    }

    /// Names directly under `folder` (files and folders), sorted; none if it does not exist.
    pub async fn list(&self, folder: &str) -> io::Result<Vec<String>> {
        match self {
            Store::Local(root) => {
                let dir = root.join(folder);
                blocking(move || local_list(&dir)).await
            }
            Store::Object { store, prefix, .. } => {
                let listed =
                    store.list_with_delimiter(Some(&Self::object_path(prefix, folder))).await.map_err(object_error)?;
                let folders = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned));
                let objects = listed.objects.iter().filter_map(|o| o.location.filename().map(str::to_owned));
                let mut names: Vec<String> = folders.chain(objects).collect();
                names.sort();
                Ok(names)
            }
        }
    }

    pub(crate) async fn remove_folder(&self, folder: &str) -> io::Result<()> {
        match self {
            Store::Local(root) => {
                let dir = root.join(folder);
                blocking(move || match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .await
            }
            Store::Object { store, prefix, .. } => {
                let objects: Vec<_> =
                    store.list(Some(&Self::object_path(prefix, folder))).try_collect().await.map_err(object_error)?;
                for object in objects {
                    store.delete(&object.location).await.map_err(object_error)?;
                }
                Ok(())
            }
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.expect("storage task does not panic")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn local_put(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a path under the root");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let staging = dir.join(format!("{STAGING}{name}"));
    std::fs::write(&staging, bytes)?;
    File::open(&staging)?.sync_all()?;
    std::fs::rename(&staging, path)?;
    sync_dir(dir)
}

fn local_put_folder(root: &Path, folder: &str, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    // Staging folders left by a crash are incomplete by definition: one writer at a time.
    for name in std::fs::read_dir(root)? {
        let entry = name?;
        if entry.file_name().to_string_lossy().starts_with(STAGING) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    let staging = root.join(format!("{STAGING}{folder}"));
    std::fs::create_dir_all(&staging)?;
    for (name, bytes) in files {
        let path = staging.join(name);
        std::fs::write(&path, bytes)?;
        File::open(&path)?.sync_all()?;
    }
    sync_dir(&staging)?;
    std::fs::rename(&staging, root.join(folder))?;
    sync_dir(root)
}

fn local_list(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STAGING) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A JSON file kept in the store that cannot be read back: the start stops, since going on would
/// forget what it holds (firing alerts, restatements) and tell it again.
#[derive(Debug, thiserror::Error)]
pub enum KeptJsonError {
    #[error("{path} in {store} is not readable JSON: {source} (fix or remove it)")]
    NotJson { path: &'static str, store: String, source: serde_json::Error },
    #[error("cannot read {path} in {store}: {source} (check the snapshot store)")]
    Store { path: &'static str, store: String, source: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn folders_appear_whole_and_staging_is_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_owned());
        // A crash in the middle of a write leaves a staging folder behind.
        std::fs::create_dir_all(dir.path().join(".staging-gen-1")).unwrap();
        std::fs::write(dir.path().join(".staging-gen-1/half"), b"x").unwrap();
        assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
        store.put_folder("gen-2", vec![("a".into(), b"1".to_vec()), ("b".into(), b"22".to_vec())]).await.unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["gen-2"]);
        assert!(!dir.path().join(".staging-gen-1").exists(), "leftovers are cleared");
        assert_eq!(store.get("gen-2/b").await.unwrap(), &b"22"[..]);
        store.put("gen-2/manifest.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(store.list("gen-2").await.unwrap(), vec!["a", "b", "manifest.json"]);
        store.remove_folder("gen-2").await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
    }
}
