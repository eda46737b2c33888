//! Serving the views: SQL (`query`, held to `sql_fence`, failing with a `sql_error`) over HTTP
//! (`http` on the `listen`er, its `routes`: the wall, /sql, /metrics with the `exposition` of the scores,
//! /healthz, alerts) and over the PostgreSQL protocol (`postgres`, behind `pg_guard`), both over
//! `tls` when configured; `access` says who may reach which (single sign-on JWTs by `oidc`), and `scope` which units' rows;
//! `audit` writes down who did what; `report` writes the weekly report.

pub mod access;
pub mod api;
pub mod audit;
pub mod exposition;
pub mod http;
pub mod listen;
pub mod oidc;
pub mod pg_guard;
pub mod postgres;
pub mod query;
pub mod report;
pub mod routes;
pub mod scope;
pub mod scram;
pub mod sql_error;
pub mod sql_fence;
pub mod tls;
