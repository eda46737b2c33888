//! The core's integration tests, one binary:
//! - `contract`: the shipped schemas and examples against the decoders;
//! - `reference`: a batch reference implementation the incremental state must agree with.

use std::path::{Path, PathBuf};

mod contract;
mod reference;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("core/ is in the repo").to_owned()
}
