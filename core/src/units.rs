//! The unit registry: the tree of administrative units (`schemas/unit.v1.schema.json`), loaded
//! from a JSON-lines file. Any depth; several roots (a province, ministries) may share one file.

use hashbrown::HashMap; // foldhash: looked up by code for every event
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Province,
    Ministry,
    Department,
    District,
    Commune,
    Agency,
}

impl Level {
    /// This level as one bit of a [`LevelSet`].
    pub fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::Ministry => "ministry",
            Level::Department => "department",
            Level::District => "district",
            Level::Commune => "commune",
            Level::Agency => "agency",
        }
    }
}

/// The levels present in a subtree; pooling up the tree takes their union.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelSet(pub u8);

// Pooling sums values up the tree; for a set of levels the "sum" is the union.
#[allow(clippy::suspicious_op_assign_impl)]
impl std::ops::AddAssign for LevelSet {
    fn add_assign(&mut self, other: LevelSet) {
        self.0 |= other.0;
    }
}

impl LevelSet {
    pub fn contains_any(self, levels: &[Level]) -> bool {
        levels.iter().any(|l| self.0 & l.bit() != 0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub level: Level,
    /// The commune offers electronic certified copies from originals (criterion 5.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub certified_copies: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the unit registry {path}: {source} (set [registry] units_file)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("unit registry line {line}: {detail}")]
    Line { line: usize, detail: String },
    #[error("unit registry: {0}")]
    Tree(String),
}

/// Units in an order where every parent comes before its children, with child lists.
#[derive(Debug, Clone)]
pub struct Registry {
    units: Vec<Unit>,
    index: HashMap<String, usize>,
    parent: Vec<Option<usize>>,
    depth: Vec<u32>,
}

/// The example registry this build ships (`schemas/examples/units.jsonl`): the default when the
/// config names no units file.
pub const EXAMPLE: &str = include_str!("../../schemas/examples/units.jsonl");

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: path.to_owned(), source })?;
        Registry::parse(&text)
    }

    pub fn parse(jsonl: &str) -> Result<Registry, RegistryError> {
        let mut units = Vec::new();
        for (i, line) in jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let unit: Unit =
                serde_json::from_str(line).map_err(|e| RegistryError::Line { line: i + 1, detail: e.to_string() })?;
            units.push(unit);
        }
        Registry::new(units)
    }

    pub fn new(units: Vec<Unit>) -> Result<Registry, RegistryError> {
        let mut by_code: HashMap<&str, &Unit> = HashMap::new();
        for unit in &units {
            if unit.code.is_empty() {
                return Err(RegistryError::Tree("a unit has an empty code".into()));
            }
            if by_code.insert(&unit.code, unit).is_some() {
                return Err(RegistryError::Tree(format!("unit {} is listed twice", unit.code)));
            }
        }
        // Depth of each unit by walking up; a walk longer than the unit count is a cycle.
        let mut depth_of: HashMap<&str, u32> = HashMap::new();
        for unit in &units {
            let mut depth = 0;
            let mut cursor = unit;
            while let Some(parent) = &cursor.parent {
                cursor = by_code.get(parent.as_str()).ok_or_else(|| {
                    RegistryError::Tree(format!(
                        "unit {} names parent {parent}, which is not in the registry",
                        cursor.code
                    ))
                })?;
                depth += 1;
                if depth as usize > units.len() {
                    return Err(RegistryError::Tree(format!("unit {} is its own ancestor", unit.code)));
                }
            }
            depth_of.insert(&unit.code, depth);
        }
        let mut ordered = units.clone();
        ordered.sort_by(|a, b| depth_of[a.code.as_str()].cmp(&depth_of[b.code.as_str()]).then(a.code.cmp(&b.code)));
        let index: HashMap<String, usize> = ordered.iter().enumerate().map(|(i, u)| (u.code.clone(), i)).collect();
        let parent = ordered.iter().map(|u| u.parent.as_ref().map(|p| index[p])).collect();
        let depth = ordered.iter().map(|u| depth_of[u.code.as_str()]).collect();
        Ok(Registry { units: ordered, index, parent, depth })
    }

    /// Units, parents before children.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    pub fn position(&self, code: &str) -> Option<usize> {
        self.index.get(code).copied()
    }

    /// Position of the parent of the unit at `i`.
    pub fn parent_of(&self, i: usize) -> Option<usize> {
        self.parent[i]
    }

    /// The root above the unit at `i` (itself for a root).
    pub fn root_of(&self, mut i: usize) -> usize {
        while let Some(p) = self.parent[i] {
            i = p;
        }
        i
    }

    /// Whether the unit at `i` is `ancestor` or lies below it.
    pub fn is_within(&self, mut i: usize, ancestor: usize) -> bool {
        loop {
            if i == ancestor {
                return true;
            }
            match self.parent[i] {
                Some(p) => i = p,
                None => return false,
            }
        }
    }

    /// For each unit, the levels of the units in its subtree.
    pub fn subtree_levels(&self) -> Vec<LevelSet> {
        self.pool_up(&self.units.iter().map(|u| LevelSet(u.level.bit())).collect::<Vec<_>>())
    }

    /// 0 for a root.
    pub fn depth_of(&self, i: usize) -> u32 {
        self.depth[i]
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Sums per-unit values up the tree: the result holds, for each unit, its own value plus
    /// that of every unit below it. This is how a parent is scored: on the pooled dossiers of its
    /// subtree, never as an average of its children's scores.
    pub fn pool_up<T: Copy + std::ops::AddAssign>(&self, own: &[T]) -> Vec<T> {
        let mut pooled = own.to_vec();
        for i in (0..self.units.len()).rev() {
            if let Some(p) = self.parent[i] {
                let value = pooled[i];
                pooled[p] += value;
            }
        }
        pooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = r#"
{"code":"H44.100","name":"Xã A","parent":"H44","level":"commune"}
{"code":"H44","name":"Tỉnh","level":"province"}
{"code":"H44.01","name":"Sở Tư pháp","parent":"H44","level":"department"}
{"code":"H44.01.1","name":"Phòng Hộ tịch","parent":"H44.01","level":"agency"}
"#;

    #[test]
    fn parents_come_first_and_pooling_sums_subtrees() {
        let reg = Registry::parse(TREE).unwrap();
        assert_eq!(reg.units()[0].code, "H44");
        let own: Vec<i64> = reg
            .units()
            .iter()
            .map(|u| match u.code.as_str() {
                "H44" => 1,
                "H44.01" => 10,
                "H44.01.1" => 100,
                _ => 1000,
            })
            .collect();
        let pooled = reg.pool_up(&own);
        let at = |code| pooled[reg.position(code).unwrap()];
        assert_eq!((at("H44"), at("H44.01"), at("H44.01.1"), at("H44.100")), (1111, 110, 100, 1000));
        assert_eq!(reg.depth_of(reg.position("H44.01.1").unwrap()), 2);
    }

    #[test]
    fn broken_trees_are_refused_with_the_unit_named() {
        let err = Registry::parse(r#"{"code":"A","name":"a","parent":"B","level":"commune"}"#).unwrap_err();
        assert!(err.to_string().contains("parent B"), "{err}");
        let cyc = "{\"code\":\"A\",\"name\":\"a\",\"parent\":\"B\",\"level\":\"commune\"}\n{\"code\":\"B\",\"name\":\"b\",\"parent\":\"A\",\"level\":\"commune\"}";
        assert!(Registry::parse(cyc).unwrap_err().to_string().contains("own ancestor"));
        let err = Registry::parse("{\"code\":\"A\"}").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
