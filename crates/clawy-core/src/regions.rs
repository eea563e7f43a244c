//! Regions people can pick (DATA-2): reads the hosts with their load and the default
//! plan, and lets [`crate::placement::regions`] decide. Kept apart from `plans` and
//! `hosts` so that neither has to know the other (or placement).

use crate::Core;
use crate::error::InternalError;
use crate::hosts::HostError;
use crate::placement::{self, Region};
use crate::plans::PlanError;

pub struct Regions<'a> {
    pub(crate) core: &'a Core,
}

impl Regions<'_> {
    /// The allowed countries with at least one enabled host, the default first.
    pub async fn list(&self) -> Result<Vec<Region>, InternalError> {
        let cfg = self.core.config();
        let plan = match self.core.plans().default_plan().await {
            Ok(p) => Some(p),
            Err(PlanError::NotFound(_)) => None,
            Err(PlanError::Internal(e)) => return Err(e),
            Err(e) => return Err(InternalError::other(e.to_string())),
        };
        let hosts = self
            .core
            .hosts()
            .list_with_load()
            .await
            .map_err(|e| match e {
                HostError::Internal(i) => i,
                other => InternalError::other(other.to_string()),
            })?;
        Ok(placement::regions(
            &cfg.allowed_countries,
            &cfg.default_region,
            &hosts,
            plan.as_ref(),
        ))
    }
}
