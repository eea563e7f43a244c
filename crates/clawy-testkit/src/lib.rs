//! clawy-testkit
