//! Operations the REST API and the dashboard both perform. They take the core and an
//! [`clawy_core::Actor`], speak domain types and domain errors, and know nothing of
//! HTTP: each surface maps their errors with its own one mapping (`error::ApiError`
//! for JSON, `web::WebError` for pages). Host registration, which talks to an agent,
//! lives with the rest of the agent-facing code in `clawy_orchestrator::registration`.

pub mod instances;
