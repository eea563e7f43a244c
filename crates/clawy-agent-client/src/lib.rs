//! clawy-agent-client
