//! clawy-proto
