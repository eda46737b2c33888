//! What a query must pass before it runs, whichever protocol brought it: its text is short enough,
//! its expressions are shallow enough to plan without exhausting a stack, its plan only reads, its
//! constants are small enough to copy into every row, and the functions that can make large values
//! from small ones (repeat, lpad, array_repeat, range, replace, concat …) refuse to make values past
//! `[sql] max_value_mib`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectName, SetExpr, Statement, Visit, Visitor};

use crate::serve::sql_error::{read_only, QueryError, READ_ONLY_HINT};

/// The bounds every query is held to (`[sql]` keys).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_query_bytes: usize,
    pub max_expression_depth: usize,
    pub max_plan_nodes: usize,
    pub max_value_bytes: usize,
}

impl Bounds {
    /// The query text is short enough to parse.
    pub(crate) fn check_text(&self, text: &str) -> Result<(), QueryError> {
        if text.len() > self.max_query_bytes {
            return Err(QueryError::TooLarge(format!(
                "the query is {} bytes, longer than the {} bytes allowed ([sql] max_query_bytes); \
                 put long value lists in a table or narrow them",
                text.len(),
                self.max_query_bytes
            )));
        }
        Ok(())
    }

    /// The parsed statement is small enough to plan: every expression nests at most
    /// `max_expression_depth` deep, and its tables, each CTE counted once a reference, are at
    /// most `max_plan_nodes` (DataFusion's planner copies a CTE's plan into every reference).
    pub(crate) fn check_statement(&self, statement: &Statement) -> Result<(), QueryError> {
        let expanded = expanded_tables(statement);
        if expanded > self.max_plan_nodes {
            return Err(QueryError::TooLarge(format!(
                "the query reads tables {expanded} times over, each CTE counted once for each reference to it, \
                 more than [sql] max_plan_nodes ({}): reference a CTE fewer times, or join fewer tables",
                self.max_plan_nodes
            )));
        }
        let mut depth = Depth { now: 0, limit: self.max_expression_depth };
        match statement.visit(&mut depth) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(QueryError::TooLarge(format!(
                "an expression or a chain of UNION nests deeper than {} levels ([sql] max_expression_depth); \
                 a long chain of OR or + counts one level a term: write x IN (…) or split the query",
                self.max_expression_depth
            ))),
        }
    }

    /// The plan only reads, is small enough to optimise, and none of its constants is too large
    /// to copy into every row of a batch. Checked before the optimiser, which would copy every
    /// node a CTE shares.
    pub(crate) fn check_plan(&self, plan: &LogicalPlan, batch_rows: usize) -> Result<(), QueryError> {
        let largest = self.max_value_bytes / batch_rows.max(1);
        let (mut too_large, mut nodes) = (None, 0);
        plan.apply_with_subqueries(|node| {
            nodes += 1;
            if nodes > self.max_plan_nodes {
                return Ok(TreeNodeRecursion::Stop);
            }
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::Literal(value, _) = e {
                        if value.size() > largest {
                            too_large = Some(value.size());
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })
        .map_err(|e| QueryError::Internal(e.to_string()))?;
        if nodes > self.max_plan_nodes {
            return Err(QueryError::TooLarge(format!(
                "the plan has more than {} nodes ([sql] max_plan_nodes); a CTE counts once for each \
                 reference to it: join fewer tables, or reference a CTE fewer times",
                self.max_plan_nodes
            )));
        }
        // After the count: verify_plan visits every node as often as it is shared.
        read_only().verify_plan(plan).map_err(|e| QueryError::Refused(format!("{e} ({READ_ONLY_HINT})")))?;
        match too_large {
            Some(bytes) => Err(QueryError::TooLarge(format!(
                "a constant of {bytes} bytes: constants are copied into every row of a batch and may be at most \
                 {largest} bytes ([sql] max_value_mib / batch size); pass long lists with IN (…) or from a table"
            ))),
            None => Ok(()),
        }
    }
}

/// Counts the nesting of expressions; stops at the first that goes past the limit.
struct Depth {
    now: usize,
    limit: usize,
}

impl Visitor for Depth {
    type Break = ();

    /// `a UNION b UNION c …` nests one level a branch, like `a + b + c`.
    fn pre_visit_query(&mut self, query: &datafusion::sql::sqlparser::ast::Query) -> ControlFlow<()> {
        match self.now + set_operations(&query.body) > self.limit {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, _: &datafusion::sql::sqlparser::ast::Expr) -> ControlFlow<()> {
        self.now += 1;
        if self.now > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _: &datafusion::sql::sqlparser::ast::Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// How many table scans the statement plans into once each CTE reference is replaced by the
/// CTE's own tables (a CTE referenced before it is defined, or by itself, counts one).
fn expanded_tables(statement: &Statement) -> usize {
    let mut ctes = Ctes::default();
    let _ = statement.visit(&mut ctes);
    let mut weights: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let weight_of = |weights: &std::collections::HashMap<String, usize>, names: &[String]| {
        names.iter().map(|n| weights.get(n).copied().unwrap_or(1)).fold(1usize, usize::saturating_add)
    };
    for (name, references) in &ctes.defined {
        let weight = weight_of(&weights, references);
        weights.insert(name.clone(), weight);
    }
    let mut all = Relations::default();
    let _ = statement.visit(&mut all);
    weight_of(&weights, &all.0)
}

/// The CTEs of a statement in the order they are defined, with the tables each one reads.
#[derive(Default)]
struct Ctes {
    defined: Vec<(String, Vec<String>)>,
}

impl Visitor for Ctes {
    type Break = ();

    fn pre_visit_query(&mut self, query: &datafusion::sql::sqlparser::ast::Query) -> ControlFlow<()> {
        for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
            let mut read = Relations::default();
            let _ = cte.query.visit(&mut read);
            self.defined.push((cte.alias.name.value.to_lowercase(), read.0));
        }
        ControlFlow::Continue(())
    }
}

/// Every table name a statement reads, as often as it is named.
#[derive(Default)]
struct Relations(Vec<String>);

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        // The table's own name, unquoted: "T" and t name the same CTE here, to count no less.
        let name = relation.0.last().and_then(|part| part.as_ident()).map(|ident| ident.value.to_lowercase());
        self.0.push(name.unwrap_or_default());
        ControlFlow::Continue(())
    }
}

/// How deep the UNION / INTERSECT / EXCEPT operations of a query body nest.
fn set_operations(body: &SetExpr) -> usize {
    match body {
        SetExpr::SetOperation { left, right, .. } => 1 + set_operations(left).max(set_operations(right)),
        _ => 0,
    }
}

/// The functions whose result can be much larger than their arguments, and how to foresee it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `f(value, n, …)`: about n times the value (repeat, array_repeat).
    Times,
    /// `f(value, n, …)`: n characters or elements (lpad, rpad, array_resize).
    Length,
    /// `f(start, stop[, step])`: one element per step (range, generate_series).
    Steps,
    /// `f(text, from, to)`: each `from` becomes `to` (replace, regexp_replace).
    Replace,
    /// The arguments joined (concat, concat_ws, array_concat, array_append, overlay …).
    Sum,
}

const AMPLIFIERS: [(&str, Growth); 15] = [
    ("repeat", Growth::Times),
    ("array_repeat", Growth::Times),
    ("lpad", Growth::Length),
    ("rpad", Growth::Length),
    ("array_resize", Growth::Length),
    ("range", Growth::Steps),
    ("generate_series", Growth::Steps),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::Replace),
    ("concat", Growth::Sum),
    ("concat_ws", Growth::Sum),
    ("array_concat", Growth::Sum),
    ("array_append", Growth::Sum),
    ("array_prepend", Growth::Sum),
    ("overlay", Growth::Sum),
];

/// Replaces each amplifying function of the context with one that refuses, before it allocates,
/// a result past `max_value_bytes`, and checks what it made.
pub(crate) fn cap_functions(context: &SessionContext, max_value_bytes: usize) {
    let state = context.state();
    for (name, growth) in AMPLIFIERS {
        if let Some(inner) = state.scalar_functions().get(name) {
            context.register_udf(ScalarUDF::new_from_impl(Capped {
                inner: inner.clone(),
                growth,
                max_bytes: max_value_bytes,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: usize,
}

impl Capped {
    fn refuse(&self, bytes: usize) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() would make about {} MiB for one batch of rows, more than the {} MiB a value may take \
             ([sql] max_value_mib)",
            self.inner.name(),
            bytes >> 20,
            self.max_bytes >> 20
        ))
    }

    /// An upper estimate of the bytes the call will produce, from its arguments.
    fn foresee(&self, args: &ScalarFunctionArgs) -> usize {
        let rows = args.number_rows.max(1);
        let size = |v: &ColumnarValue| match v {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size().saturating_mul(rows),
        };
        let largest_int = |v: Option<&ColumnarValue>| -> usize {
            let clamp = |i: i64| usize::try_from(i).unwrap_or(0);
            match v {
                Some(ColumnarValue::Scalar(s)) => scalar_int(s).map(clamp).unwrap_or(0),
                Some(ColumnarValue::Array(a)) => (0..a.len())
                    .filter_map(|i| ScalarValue::try_from_array(a, i).ok())
                    .filter_map(|s| scalar_int(&s))
                    .map(clamp)
                    .max()
                    .unwrap_or(0),
                None => 0,
            }
        };
        let per_row =
            |v: Option<&ColumnarValue>| v.map(|v| text_bytes(v).unwrap_or(size(v) / rows)).unwrap_or(0).max(1);
        let args_ = &args.args;
        let sum: usize = args_.iter().map(size).fold(0, usize::saturating_add);
        match self.growth {
            Growth::Times => per_row(args_.first()).saturating_mul(largest_int(args_.get(1))).saturating_mul(rows),
            Growth::Length => largest_int(args_.get(1)).saturating_mul(8).saturating_mul(rows),
            Growth::Steps => {
                // Constant bounds give the exact count; bounds from columns, the largest of them.
                let steps =
                    range_steps(args_).unwrap_or_else(|| largest_int(args_.first()).max(largest_int(args_.get(1))));
                steps.saturating_mul(8).saturating_mul(rows)
            }
            Growth::Replace => {
                // Each match becomes `to`: at most one match per `from` bytes of text (per byte
                // for a regular expression, whose matches can be that short or empty).
                let text = args_.first().map(size).unwrap_or(0);
                let to = args_.get(2).map_or(0, |v| text_bytes(v).unwrap_or_else(|| size(v)));
                let from = match self.inner.name() {
                    "replace" => args_.get(1).and_then(text_bytes).unwrap_or(1).max(1),
                    _ => 1,
                };
                text.saturating_add((text / from).saturating_mul(to))
            }
            Growth::Sum => sum,
        }
    }
}

/// The number of steps of `range(start, stop, step)` when all three are constants.
fn range_steps(args: &[ColumnarValue]) -> Option<usize> {
    let int = |i: usize| match args.get(i) {
        Some(ColumnarValue::Scalar(s)) => scalar_int(s),
        _ => None,
    };
    let (start, stop, step) = match args.len() {
        1 => (0, int(0)?, 1),
        2 => (int(0)?, int(1)?, 1),
        _ => (int(0)?, int(1)?, int(2)?),
    };
    if step == 0 {
        return Some(0);
    }
    Some(usize::try_from((i128::from(stop) - i128::from(start)) / i128::from(step)).unwrap_or(0))
}

/// The length in bytes of a constant text.
fn text_bytes(value: &ColumnarValue) -> Option<usize> {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
        ) => Some(s.len()),
        _ => None,
    }
}

fn scalar_int(value: &ScalarValue) -> Option<i64> {
    match value.cast_to(&datafusion::arrow::datatypes::DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(
        &self,
        arg_types: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(
        &self,
        arg_types: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<Vec<datafusion::arrow::datatypes::DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let foreseen = self.foresee(&args);
        if foreseen > self.max_bytes {
            return Err(self.refuse(foreseen));
        }
        let rows = args.number_rows.max(1);
        let made = self.inner.invoke_with_args(args)?;
        let bytes = match &made {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size().saturating_mul(rows),
        };
        if bytes > self.max_bytes {
            return Err(self.refuse(bytes));
        }
        Ok(made)
    }
}
