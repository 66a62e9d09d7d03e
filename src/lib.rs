//! gcrsync: mirror container images between registries verbatim, within a budget, and
//! record what was mirrored (SPEC.md). The binary is a thin shell over `app::run`.
#![deny(missing_docs)]

pub mod actions;
pub mod app;
pub mod cli;
pub mod copy;
pub mod deletions;
pub mod docs;
pub mod exit;
pub mod filter;
pub mod gcp;
pub mod listing;
pub mod mapping;
pub mod metadata;
pub mod oci;
pub mod plan;
pub mod platforms;
pub mod progress;
pub mod reference;
pub mod referrers;
pub mod report;
pub mod retry;
pub mod run;
pub mod serve;
pub mod settings;
