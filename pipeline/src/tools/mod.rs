//! The tools around the pipeline: the `demo` (an in-process broker and a simulated province), the
//! simulated province itself (`simulate`), the event producer (`produce`), and what the other
//! commands do (`commands`).

pub mod alert_noise;
pub mod commands;
pub mod demo;
pub mod produce;
pub mod simulate;
