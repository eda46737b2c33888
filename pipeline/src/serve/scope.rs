//! Unit scopes: a principal limited to unit subtrees reads only the rows of the units in them.
//! The SQL tables apply the scope where they are scanned (`query`'s live tables), so every view,
//! join, subquery and catalog query reads through it; the HTTP answers and the metrics apply it
//! to what they show. Nothing above the subtrees is shown: a unit's own rows carry its rank among
//! its siblings, and the province's figures are for unscoped principals.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use index766_core::units::Registry;

use crate::serve::access::Principal;

/// The column every table names its unit by.
const UNIT_COLUMN: &str = "unit_code";

/// The units a scoped principal may read.
#[derive(Debug, Clone)]
pub struct Scope {
    units: Arc<HashSet<String>>,
}

impl Scope {
    /// What `principal` may read; `None`: everything (sign-in off, or a principal of the whole province).
    pub fn for_principal(principal: Option<&Principal>, registry: &Registry) -> Option<Scope> {
        principal.filter(|p| !p.units.is_empty()).map(|p| Scope::of(registry, &p.units))
    }

    /// The units within any of `roots` (each root and everything below it). A root the registry
    /// does not hold (yet) adds nothing.
    pub fn of(registry: &Registry, roots: &[String]) -> Scope {
        let roots: Vec<usize> = roots.iter().filter_map(|code| registry.position(code)).collect();
        let units = (0..registry.len())
            .filter(|&i| roots.iter().any(|&root| registry.is_within(i, root)))
            .map(|i| registry.units()[i].code.clone())
            .collect();
        Scope { units: Arc::new(units) }
    }

    /// The subtree of `root`, within `outer` when the principal is scoped.
    pub fn narrowed(outer: Option<&Scope>, registry: &Registry, root: &str) -> Scope {
        let subtree = Scope::of(registry, &[root.to_owned()]);
        match outer {
            Some(outer) => Scope { units: Arc::new(subtree.units.intersection(&outer.units).cloned().collect()) },
            None => subtree,
        }
    }

    pub fn keeps(&self, unit: &str) -> bool {
        self.units.contains(unit)
    }

    /// The rows of `batch` whose unit is in scope; a table without a unit column shows none.
    pub fn rows(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        // Plain or dictionary-encoded text, as the tables hold it.
        let units = batch.column_by_name(UNIT_COLUMN).map(|c| cast(c, &DataType::Utf8)).transpose()?;
        let kept: BooleanArray = match units.as_ref().and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
            Some(units) => units.iter().map(|u| Some(u.is_some_and(|u| self.keeps(u)))).collect(),
            None => std::iter::repeat_n(Some(false), batch.num_rows()).collect(),
        };
        filter_record_batch(batch, &kept)
    }

    /// The Prometheus exposition without the samples of units out of scope (a sample names its
    /// unit in the `unit` label; samples without one are the pipeline's own).
    pub fn exposition(&self, text: &str) -> String {
        let shown = |line: &&str| match line.split_once("unit=\"") {
            Some((_, rest)) => rest.split_once('"').is_some_and(|(unit, _)| self.keeps(unit)),
            None => true,
        };
        text.lines().filter(shown).flat_map(|line| [line, "\n"]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn a_scope_keeps_its_subtrees_rows_and_nothing_else() {
        let registry = Registry::parse(index766_core::units::EXAMPLE).unwrap();
        let codes: Vec<String> = registry.units().iter().map(|u| u.code.clone()).collect();
        let child = registry.units().iter().find(|u| u.parent.is_some()).unwrap();
        let scope = Scope::of(&registry, std::slice::from_ref(&child.code));
        let inside: Vec<&String> = codes.iter().filter(|c| scope.keeps(c)).collect();
        assert!(inside.contains(&&child.code) && inside.len() < codes.len(), "{inside:?}");
        let parent = child.parent.as_deref().unwrap();
        assert!(!scope.keeps(parent), "nothing above the subtree");

        let schema = Arc::new(Schema::new(vec![Field::new(UNIT_COLUMN, DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(codes.clone()))]).unwrap();
        assert_eq!(scope.rows(&batch).unwrap().num_rows(), inside.len());
        let unitless = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        assert_eq!(scope.rows(&unitless).unwrap().num_rows(), 0, "a table without units shows nothing");
        assert_eq!(Scope::of(&registry, &["NO-SUCH-UNIT".into()]).units.len(), 0);

        let text = format!(
            "# HELP t x\nt{{period=\"month\",unit=\"{parent}\"}} 1\nt{{period=\"month\",unit=\"{}\"}} 2\nup 1\n",
            child.code
        );
        let shown = scope.exposition(&text);
        assert!(
            !shown.contains(&format!("unit=\"{parent}\"")) && shown.contains(&child.code) && shown.contains("up 1"),
            "{shown}"
        );
    }
}
