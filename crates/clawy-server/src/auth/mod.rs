//! Who is calling, and what they may do. Each handler states the privilege it needs in
//! its signature (`Authed<Read>`, `Authed<Manage>`, `Authed<Admin>`, `Operator`), so
//! every authorization decision is explicit and visible at the route (AUTH-2).

pub mod caller;
pub mod client_addr;
pub mod origin;

pub use caller::{Admin, Authed, Caller, CallerAuth, Manage, MaybeCaller, Operator, Read, TierReq};
pub use client_addr::ClientAddr;
