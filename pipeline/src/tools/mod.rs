//! The tools around the pipeline: the `demo` (an in-process broker and a simulated province), the
//! simulated province itself (`simulate`), and the event producer (`produce`).

pub mod demo;
pub mod produce;
pub mod simulate;
