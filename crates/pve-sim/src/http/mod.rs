//! The HTTPS API (`/api2/json`), shaped like pve-http-server + pve-manager's
//! `HTTPServer.pm`: token auth with the 3 s 401 delay, PVE's decoding of bodies,
//! permission checks from the schema, and PVE's response shapes.

pub mod auth;
pub mod decode;
pub mod server;
