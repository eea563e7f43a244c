//! The client's address (AUTH-5 throttling, audit log, session list).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The socket peer, unless it is a configured trusted proxy: then the right-most
/// `X-Forwarded-For` entry not itself a trusted proxy. Without `trusted_proxies` the header
/// is ignored, so a client cannot pick its own address to dodge throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn resolve(state: &AppState, parts: &Parts) -> Result<ClientAddr, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .ok_or_else(|| {
                ApiError::internal("no ConnectInfo: server not started with connect info")
            })?;
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddr(
            state.core.config().resolve_client_addr(peer, xff),
        ))
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(addr) = parts.extensions.get::<ClientAddr>() {
            return Ok(*addr);
        }
        let addr = Self::resolve(state, parts)?;
        parts.extensions.insert(addr);
        Ok(addr)
    }
}
