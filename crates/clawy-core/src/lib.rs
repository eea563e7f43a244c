//! clawy-core
