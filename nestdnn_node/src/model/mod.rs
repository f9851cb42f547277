//! Multi-capacity models (placeholder; built in issue 3).
