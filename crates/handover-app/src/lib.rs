//! The handover bridge application.
pub mod config;
pub mod metrics;
